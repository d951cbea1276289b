"""Histogram matching baseline (paper [5], Gonzalez & Woods): per band, source CDF → target inverse CDF."""

from __future__ import annotations

import numpy as np

from semi2i.data.normalize import QUANTILE_LEVELS, BandStats
from semi2i.stylizers.base import Stylizer, require_same_bands


class HistogramMatchingStylizer(Stylizer):
    """Maps each band through its monotone transfer function T_b = Q_target,b ∘ Q_source,b⁻¹.

    Both quantile functions are the stores' :class:`BandStats` quantiles at ``QUANTILE_LEVELS``, so the
    whole city's histogram is matched (not a per-image one) and the map is the same for every raster.
    Values outside the source range clamp to the target's extremes.
    """

    name = "histogram_matching"

    def __init__(self, source_stats: BandStats, target_stats: BandStats):
        self.in_bands = self.out_bands = require_same_bands(self.name, source_stats.num_bands, target_stats.num_bands)
        self._maps = [_transfer(s, t) for s, t in zip(source_stats.quantiles, target_stats.quantiles)]

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        out = np.empty(image.shape, dtype=np.float32)
        small_ints = image.dtype.kind in "iu" and image.dtype.itemsize <= 2
        for band, (xp, fp) in enumerate(self._maps):
            if small_ints:  # the same np.interp once per possible value, then a table lookup (uint8: ~10x faster)
                info = np.iinfo(image.dtype)
                table = np.interp(np.arange(info.min, info.max + 1, dtype=np.float64), xp, fp).astype(np.float32)
                out[band] = table[image[band] if info.min == 0 else image[band].astype(np.int32) - info.min]
            else:
                out[band] = np.interp(image[band].astype(np.float64), xp, fp)
        return out


def _transfer(source_q: np.ndarray, target_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of one band's map. Where the source quantile function is flat (a value holding a mass of
    pixels, common for integer data), np.interp needs increasing knots: that value maps to the mean of
    the target quantiles over the levels it spans, the middle of its target range."""
    if len(source_q) != len(QUANTILE_LEVELS) or len(target_q) != len(QUANTILE_LEVELS):
        raise ValueError("band stats must hold one quantile per QUANTILE_LEVELS entry")
    values, inverse = np.unique(np.asarray(source_q, dtype=np.float64), return_inverse=True)
    counts = np.bincount(inverse)
    targets = np.bincount(inverse, weights=np.asarray(target_q, dtype=np.float64)) / counts
    if len(values) == 1:  # a constant band: give it the target's median
        values, targets = np.array([values[0], values[0] + 1.0]), np.full(2, np.median(target_q))
    return values, targets
