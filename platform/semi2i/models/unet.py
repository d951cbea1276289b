"""U-net (Ronneberger et al. 2015), the paper's segmentation model, as a fully convolutional network.

Choices (the paper only cites [1]):

- "same" 3x3 convolutions (padding 1) with batch norm, so the output has the input's size instead of
  the original valid-convolution crop; BN makes Adam at lr 1e-4 train quickly from scratch.
- Upsampling by 2x2 stride-2 transposed convolutions that halve the channels, as in the original
  paper; the skip features are concatenated after it.
- Any H x W is accepted: the input is padded on the bottom/right to a multiple of ``2**depth``
  (reflect where the image is large enough, replicate otherwise) and the logits are cropped back, so
  region mapping can run on arbitrary windows and edge windows.
- The input normalisation (z-scores per band) is the data layer's job, not the model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["UNet", "count_parameters"]


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv3x3-BN-ReLU twice; conv bias is dropped because BN's shift replaces it."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class _Up(nn.Module):
    """Transposed conv x2 (halving channels), concatenate the skip, double conv."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv = _double_conv(2 * out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-net: ``depth`` poolings, widths ``base_width * 2**level``, logits (N, num_classes, H, W).

    ``UNet(c, k)`` with the defaults is the classic 31 M parameter U-net (for 3 bands).
    """

    def __init__(self, in_bands: int, num_classes: int, base_width: int = 64, depth: int = 4):
        super().__init__()
        if in_bands < 1 or num_classes < 1 or base_width < 1 or depth < 1:
            raise ValueError(
                f"in_bands, num_classes, base_width and depth must be >= 1, got "
                f"{in_bands}, {num_classes}, {base_width}, {depth}"
            )
        self.in_bands, self.num_classes = in_bands, num_classes
        self.base_width, self.depth = base_width, depth
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_bands, widths[0])])
        self.down.extend(_double_conv(widths[i - 1], widths[i]) for i in range(1, depth + 1))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(_Up(widths[i], widths[i - 1]) for i in range(depth, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.inference_only = False  # set by prepare_for_inference(fuse_batchnorm=True)

    @property
    def multiple(self) -> int:
        """Spatial sizes that need no padding are multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_bands:
            raise ValueError(f"expected (N, {self.in_bands}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        x = self._pad(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)[..., :height, :width]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right to a multiple of 2**depth; reflect (no hard edge) when the size allows."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h == 0 and pad_w == 0:
            return x
        # reflect needs pad < size along each dimension; tiny windows fall back to replicate.
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

    def prepare_for_inference(self, channels_last: bool = True, fuse_batchnorm: bool = True) -> "UNet":
        """Turn this model into a faster inference-only one, in place (returns self).

        - ``channels_last`` weights: perf-notes measure 1.27x faster U-net inference on this CPU, but
          ~1.3x slower training, so it is offered for inference/mapping only.
        - ``fuse_batchnorm`` folds each eval-mode BN into the conv before it (BN is a per-channel
          affine map then): narrow U-nets are memory-bound on CPU and BN passes cost a good share of
          the time. The folded model has no BN modules, so load checkpoints *before* calling this,
          and it refuses ``train()``.
        """
        self.eval()
        if fuse_batchnorm and not self.inference_only:
            for block in list(self.modules()):
                if isinstance(block, nn.Sequential):
                    for i in range(len(block) - 1):
                        if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                            block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                            block[i + 1] = nn.Identity()
            self.inference_only = True
        return self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def train(self, mode: bool = True) -> "UNet":
        if mode and getattr(self, "inference_only", False):
            raise RuntimeError("this U-net's batch norms were folded for inference; it cannot be trained")
        return super().train(mode)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements), e.g. to size the quick/paper profiles."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
