"""The trained CycleGAN generator G_AB as a stylizer: raw source pixels → target-styled raw pixels.

raw source → source ``BandStats.to_unit_range`` → G_AB → target ``BandStats.from_unit_range``, in
overlapping tiles of the training patch size blended without seams (:mod:`semi2i.tiling`), exactly as
the SemI2I stylizer: the generator's instance norms should see tiles like its training patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semi2i.data.normalize import BandStats
from semi2i.models.cyclegan import ResnetGenerator
from semi2i.models.precision import autocast, check_precision
from semi2i.stylizers.base import Stylizer
from semi2i.tiling import blend_tiles


class CycleGANStylizer(Stylizer):
    name = "cyclegan"

    def __init__(self, generator: ResnetGenerator, source_stats: BandStats, target_stats: BandStats, *,
                 tile_size: int = 256, overlap: int = 32, batch_tiles: int = 4, device: torch.device | str = "cpu",
                 precision: str = "fp32"):
        self.in_bands, self.out_bands = generator.in_bands, generator.out_bands
        for which, stats, bands in (("source", source_stats, self.in_bands), ("target", target_stats, self.out_bands)):
            if stats.num_bands != bands:
                raise ValueError(f"{which} band stats have {stats.num_bands} bands, the generator expects {bands}")
        if not 0 <= overlap < tile_size:
            raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.source_stats, self.target_stats = source_stats, target_stats
        self.tile_size, self.overlap, self.batch_tiles = tile_size, overlap, batch_tiles
        self.precision = check_precision(precision)  # refused here, not at the first tile

    @classmethod
    def from_checkpoint(cls, path: str | Path, source_stats: BandStats, target_stats: BandStats, *,
                        source: str = "a", tile_size: int | None = None, overlap: int = 32, batch_tiles: int = 4,
                        device: torch.device | str = "cpu", precision: str = "fp32") -> "CycleGANStylizer":
        """From a CycleGAN training checkpoint: ``source="a"`` uses G_AB (source → target), ``"b"`` G_BA.
        Tiles default to the training patch size."""
        from semi2i.checkpoints import load_translator

        if source not in ("a", "b"):
            raise ValueError(f"source must be 'a' or 'b', got {source!r}")
        gen_ab, gen_ba, cfg = load_translator(path, map_location=device)
        return cls(gen_ab if source == "a" else gen_ba, source_stats, target_stats, tile_size=tile_size or cfg.patch_size,
                   overlap=overlap, batch_tiles=batch_tiles, device=device, precision=precision)

    def generate(self, tiles: torch.Tensor) -> torch.Tensor:
        """Unit-range tiles through the generator in the stylizer's arithmetic (``precision``)."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.generator.translate(tiles).float()

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        fake = blend_tiles(image, self.generate, self.out_bands, tile=self.tile_size, overlap=self.overlap,
                           batch_tiles=self.batch_tiles, prepare=self.source_stats.to_unit_range, device=self.device)
        return self.target_stats.from_unit_range(fake)
