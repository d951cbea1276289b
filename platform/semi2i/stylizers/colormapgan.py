"""The trained ColorMapGAN colour map as a stylizer: raw source pixels → target-styled raw pixels.

raw source → source ``BandStats.to_unit_range`` → the per-band, per-value affine map → target
``BandStats.from_unit_range`` (which clips to the target's robust range). The map is pointwise, so a
raster needs no tiling and has no seams: it is processed in row strips only to bound memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semi2i.data.normalize import BandStats
from semi2i.models.colormapgan import ColorMapGenerator
from semi2i.stylizers.base import Stylizer, require_same_bands


class ColorMapGANStylizer(Stylizer):
    name = "colormapgan"

    def __init__(self, generator: ColorMapGenerator, source_stats: BandStats, target_stats: BandStats, *,
                 strip_pixels: int = 1 << 22, device: torch.device | str = "cpu"):
        bands = require_same_bands(self.name, source_stats.num_bands, target_stats.num_bands)
        if generator.bands != bands:
            raise ValueError(f"band stats have {bands} bands, the colour map expects {generator.bands}")
        self.in_bands = self.out_bands = bands
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.source_stats, self.target_stats = source_stats, target_stats
        self.strip_pixels = strip_pixels

    @classmethod
    def from_checkpoint(cls, path: str | Path, source_stats: BandStats, target_stats: BandStats, *,
                        overlap: int | None = None, device: torch.device | str = "cpu", **kwargs) -> "ColorMapGANStylizer":
        """From a ColorMapGAN training checkpoint. ``overlap`` is accepted (and unused: no tiles) so
        every GAN stylizer takes the same keywords."""
        from semi2i.checkpoints import load_colormap

        generator, _ = load_colormap(path, map_location=device)
        return cls(generator, source_stats, target_stats, device=device, **kwargs)

    @torch.no_grad()
    def _stylize(self, image: np.ndarray) -> np.ndarray:
        _, height, width = image.shape
        out = np.empty((self.out_bands, height, width), dtype=np.float32)
        rows = max(1, self.strip_pixels // max(width, 1))
        for y in range(0, height, rows):
            unit = torch.from_numpy(self.source_stats.to_unit_range(image[:, y : y + rows]))[None].to(self.device)
            mapped = self.generator(unit)[0].float().cpu().numpy()
            out[:, y : y + rows] = self.target_stats.from_unit_range(mapped)
        return out
