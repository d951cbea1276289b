"""Gray world baseline (paper [6], Buchsbaum 1980) as a von Kries diagonal transform between cities."""

from __future__ import annotations

import numpy as np

from semi2i.data.normalize import BandStats
from semi2i.stylizers.base import Stylizer, require_same_bands


class GrayWorldStylizer(Stylizer):
    """out_b = x_b · mean_target,b / mean_source,b.

    Gray world assumes a scene averages to gray, so each city's per-band mean estimates its illuminant.
    Correcting the source illuminant away and applying the target's is a per-band scaling (von Kries)
    by the ratio of the two estimates. The means are the whole city's (``BandStats.mean``), so every
    source raster gets the same deterministic scaling.
    """

    name = "gray_world"

    def __init__(self, source_stats: BandStats, target_stats: BandStats):
        self.in_bands = self.out_bands = require_same_bands(self.name, source_stats.num_bands, target_stats.num_bands)
        source_mean = np.asarray(source_stats.mean, dtype=np.float64)
        if np.any(np.abs(source_mean) < 1e-12):
            raise ValueError(f"gray world needs non-zero source band means, got {source_mean}")
        self.gains = (np.asarray(target_stats.mean, dtype=np.float64) / source_mean).astype(np.float32)

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        return image.astype(np.float32) * self.gains[:, None, None]
