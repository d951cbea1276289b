"""ColorMapGAN's generator (Tasar et al., arXiv 1907.12859): a colour map with no convolution at all.

The paper's generator, for 8-bit RGB, holds one weight and one bias per band for every colour triple
(r, g, b): out_c = W[r, g, b, c]·x_c + B[r, g, b, c], a 256³ lookup table (256³ × 3 × 2 ≈ 100 M
parameters). We use its per-band factorised form: for band c and input value v,

    out_c = w[c, v]·x_c + b[c, v]

i.e. a learnable 256-entry affine lookup table per band. Why: the joint table only exists for 8-bit
data with few bands (16-bit or float imagery, or 4+ bands, would need 65536^bands or a continuum of
entries) and costs ~400 MB of weights plus Adam state; the factorised map works for any band count
and dtype in a few KB. It keeps what matters for the baseline: every output pixel depends only on that
pixel's value, so no structure can change (no convolution, no pooling), and it still learns a
different affine correction for every input level of every band (a non-linear tone curve). What it
gives up is cross-band dependence (the joint table can map two pixels with the same red value but
different green values differently).

Inputs are the GAN's [-1, 1] values (``BandStats.to_unit_range``), quantised into ``bins`` levels:
for 8-bit data stretched into [-1, 1] every raw value falls in its own bin, as in the paper; other
dtypes get ``bins`` levels over their robust range. Initialised to the identity (w = 1, b = 0), as in
the paper. No output activation (the paper's map is purely affine); the stylizer clips to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ColorMapGenerator(nn.Module):
    """(N, bands, H, W) in [-1, 1] → (N, bands, H, W): out_c = w[c, bin(x_c)]·x_c + b[c, bin(x_c)]."""

    def __init__(self, bands: int, bins: int = 256):
        super().__init__()
        if bands < 1 or bins < 2:
            raise ValueError(f"need bands >= 1 and bins >= 2, got bands={bands}, bins={bins}")
        self.bands, self.bins = int(bands), int(bins)
        self.weight = nn.Parameter(torch.ones(self.bands, self.bins))
        self.bias = nn.Parameter(torch.zeros(self.bands, self.bins))

    def bin_index(self, x: Tensor) -> Tensor:
        """The LUT entry of every value: round((x + 1)/2·(bins − 1)), values outside [-1, 1] clamped."""
        return torch.round((x.clamp(-1.0, 1.0) + 1.0) * (0.5 * (self.bins - 1))).long()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.bands:
            raise ValueError(f"expected (N, {self.bands}, H, W), got {tuple(x.shape)}")
        # torch.gather, not ``lut[index]``: the latter's backward (index_put with accumulate) sums in a
        # different order on every CPU run, so seeded ColorMapGAN runs diverged; gather's does not.
        n, c, h, w = x.shape
        index = self.bin_index(x).transpose(0, 1).reshape(c, -1)  # (bands, N·H·W)

        def lookup(table: Tensor) -> Tensor:
            return torch.gather(table, 1, index).reshape(c, n, h, w).transpose(0, 1)

        return lookup(self.weight) * x + lookup(self.bias)


def require_equal_bands(bands_a: int, bands_b: int) -> int:
    """ColorMapGAN maps each band onto itself: the two domains must have the same bands."""
    if bands_a != bands_b:
        raise ValueError(
            f"ColorMapGAN maps band to band and needs equal band counts, got source {bands_a} and target "
            f"{bands_b} (CycleGAN and SemI2I handle different band counts)"
        )
    return bands_a
