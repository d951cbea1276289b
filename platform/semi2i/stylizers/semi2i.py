"""The trained SemI2I generator as a stylizer: raw source pixels → target-styled raw pixels.

raw source → source ``BandStats.to_unit_range`` → generator with the *global* target style (Algorithm 1)
→ target ``BandStats.from_unit_range``.

Rasters are processed in tiles of the training patch size with overlap, blended with weights that fall
off towards tile borders. Tiling is not only for memory: instance norm and AdaIN normalise with the
statistics of whatever they are given, so tiles of the training size see the statistics the
generator was trained on, where a whole-city pass would not. Memory: the network only ever holds
``batch_tiles`` tiles; the output and a weight plane are the only raster-sized arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semi2i.data.normalize import BandStats
from semi2i.models.precision import autocast, check_precision
from semi2i.models.semi2i import GlobalStyleStats, SemI2IGenerator
from semi2i.stylizers.base import Stylizer
from semi2i.tiling import blend_tiles


class SemI2IStylizer(Stylizer):
    """``source="a"`` turns domain-A imagery into B-styled imagery (fake A); ``"b"`` the reverse."""

    name = "semi2i"

    def __init__(
        self,
        generator: SemI2IGenerator,
        style: GlobalStyleStats,
        source_stats: BandStats,
        target_stats: BandStats,
        *,
        source: str = "a",
        tile_size: int = 256,
        overlap: int = 32,
        batch_tiles: int = 4,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
    ):
        if source not in ("a", "b"):
            raise ValueError(f"source must be 'a' or 'b', got {source!r}")
        target = "b" if source == "a" else "a"
        self.in_bands, self.out_bands = generator.bands[source], generator.bands[target]
        for which, stats, bands in (("source", source_stats, self.in_bands), ("target", target_stats, self.out_bands)):
            if stats.num_bands != bands:
                raise ValueError(f"{which} band stats have {stats.num_bands} bands, the generator expects {bands}")
        if not 0 <= overlap < tile_size:
            raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.style = style.to(self.device)
        self.source, self.source_stats, self.target_stats = source, source_stats, target_stats
        self.tile_size, self.overlap, self.batch_tiles = tile_size, overlap, batch_tiles
        self.precision = check_precision(precision)  # refused here, not at the first tile

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        source_stats: BandStats,
        target_stats: BandStats,
        *,
        source: str = "a",
        tile_size: int | None = None,
        overlap: int = 32,
        batch_tiles: int = 4,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
    ) -> "SemI2IStylizer":
        """From a SemI2I training checkpoint; tiles default to the training patch size."""
        from semi2i.checkpoints import load_stylizing_models

        generator, style, cfg = load_stylizing_models(path, map_location=device)
        return cls(
            generator, style, source_stats, target_stats, source=source,
            tile_size=tile_size or cfg.patch_size, overlap=overlap, batch_tiles=batch_tiles, device=device,
            precision=precision,
        )

    def generate(self, tiles: torch.Tensor) -> torch.Tensor:
        """Unit-range source tiles -> unit-range target-styled tiles, in the stylizer's arithmetic (``precision``:
        ``"bf16"`` autocasts, as the generator trained with ``semi2i.precision: bf16``; 2x faster on a CPU with
        AMX, a mean change of 0.1 DN on 8-bit output)."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.generator.stylize(tiles, self.source, self.style).float()

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        fake = blend_tiles(
            image,
            self.generate,
            self.out_bands,
            tile=self.tile_size,
            overlap=self.overlap,
            batch_tiles=self.batch_tiles,
            prepare=self.source_stats.to_unit_range,
            device=self.device,
        )
        return self.target_stats.from_unit_range(fake)
