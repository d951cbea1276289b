"""The arithmetic a network runs in: ``"fp32"``, or ``"bf16"`` autocast (training steps, stylizers, mapping).

Below training and inference so that both run a model the same way (a stylizer in its generator's training
arithmetic) without inference importing training.
"""

from __future__ import annotations

import torch

from semi2i.config import PRECISIONS


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`semi2i.config.PRECISIONS`, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str) -> torch.autocast:
    """The context for forward passes (and losses): bf16 autocast when ``precision == "bf16"``."""
    check_precision(precision)
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
