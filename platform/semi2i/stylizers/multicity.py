"""The trained multi-city model as a stylizer for one (source, target) pair of its cities.

Not in :data:`semi2i.stylizers.STYLIZERS`: that registry builds the two-city stylizers (``source`` =
"a"/"b") one checkpoint each, while a multi-city run loads ``multicity.pt`` once and builds a stylizer
per (source, target) pair from it, named by city.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semi2i.config import SemI2IConfig
from semi2i.data.normalize import BandStats
from semi2i.models.multicity import MultiCityGenerator, MultiCityStyleStats
from semi2i.stylizers.base import Stylizer
from semi2i.tiling import blend_tiles
from semi2i.checkpoints import load_checkpoint


def load_multicity(path: str | Path, map_location: str = "cpu") -> tuple[MultiCityGenerator, MultiCityStyleStats, list[str], SemI2IConfig]:
    """The generator (eval), the per-city global statistics, the city names and the config of a checkpoint."""
    state = load_checkpoint(path, map_location)
    cfg = SemI2IConfig(**state["config"])
    generator = MultiCityGenerator(cfg.in_bands_a, cfg.base_width, cfg.n_res_blocks, cfg.adain_eps, cfg.style_path)
    generator.load_state_dict(state["generator"])
    style = MultiCityStyleStats(len(state["cities"]), generator.style_channels, cfg.d_rate)
    style.load_state_dict(state["style"])
    return generator.eval(), style, list(state["cities"]), cfg


class MultiCityStylizer(Stylizer):
    """Raw pixels of ``source`` → raw pixels in ``target``'s style: shared generator, target's global μ, σ."""

    name = "semi2i_multicity"

    def __init__(self, generator: MultiCityGenerator, style: MultiCityStyleStats, cities: list[str], source: str, target: str,
                 source_stats: BandStats, target_stats: BandStats, *, tile_size: int = 256, overlap: int = 32,
                 batch_tiles: int = 4):
        for city in (source, target):
            if city not in cities:
                raise ValueError(f"city {city!r} is not in the model (cities: {', '.join(cities)})")
        self.in_bands = self.out_bands = generator.bands
        for which, stats in (("source", source_stats), ("target", target_stats)):
            if stats.num_bands != generator.bands:
                raise ValueError(f"{which} band stats have {stats.num_bands} bands, the model expects {generator.bands}")
        self.generator = generator.eval()
        self.mu, self.sigma = (t.clone() for t in style.style(cities.index(target)))
        self.source_stats, self.target_stats = source_stats, target_stats
        self.tile_size, self.overlap, self.batch_tiles = tile_size, overlap, batch_tiles

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        fake = blend_tiles(image, lambda tiles: self.generator.stylize(tiles, self.mu, self.sigma), self.out_bands,
                           tile=self.tile_size, overlap=self.overlap, batch_tiles=self.batch_tiles,
                           prepare=self.source_stats.to_unit_range)
        return self.target_stats.from_unit_range(fake)
