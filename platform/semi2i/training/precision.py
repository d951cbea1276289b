"""Training arithmetic: bf16 autocast for forward passes and losses, TF32 on CUDA.

Why autocast and not bf16 weights: the weights, Adam's moments, the generator-weight EMA and Algorithm 1's
global style statistics stay fp32, so a checkpoint is the same whichever precision trained it, a run can
resume in the other precision, and small updates (EMA rates near 1, lr 1e-4) are not rounded away. bf16
has fp32's exponent range, so no loss scaling (GradScaler) is needed. The style statistics are computed in
fp32 (:func:`semi2i.models.semi2i.channel_stats` casts before mean/var).
"""

from __future__ import annotations

import torch

from semi2i.models.precision import autocast

__all__ = ["autocast", "use_tf32"]  # autocast lives below training and inference (semi2i.models.precision)


def use_tf32(enabled: bool, device: torch.device | str) -> None:
    """Turn TF32 matmuls and cuDNN convolutions on for this process when ``enabled`` and ``device`` is CUDA.

    Off leaves PyTorch's settings as they are (as map_region's ``tf32`` does); elsewhere it does nothing.
    """
    if enabled and torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
