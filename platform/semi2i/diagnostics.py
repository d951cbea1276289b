"""Checks on a stylized source that catch a failed translation before anyone reads the mIoU.

The failure SemI2I showed on the Dubai bright → sensor-D pair is a *tone inversion*: the generator keeps
every edge but paints black water light and bright land grey (it maps the source's majority class onto
the target's). The U-net fine-tuned on that learns "light flat = water" and fails on the real target.
Any faithful restyling (brighter, darker, hazier, other colours, a new band count) keeps the *order* of
pixel brightness; an inversion reverses it. So the check is a rank correlation, not an error.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from semi2i.data.normalize import BandStats

#: tone order below this means the stylizer reversed the source's brightness order
INVERTED_BELOW = 0.0


def luminance(image: np.ndarray, stats: BandStats) -> np.ndarray:
    """Mean of the z-scored bands: a brightness defined for any band count and dtype."""
    return stats.zscore(image).mean(axis=0, dtype=np.float64)


def tone_order(pairs: Iterable[tuple[np.ndarray, np.ndarray]], source_stats: BandStats, fake_stats: BandStats,
               stride: int = 4) -> float:
    """Spearman rank correlation between the brightness of source pixels and of the same pixels after
    stylizing, over every ``stride``-th pixel of every (source, fake) raster pair: 1 for any monotone
    restyling, about 0 when the fake's tones are unrelated, below 0 when they are inverted."""
    xs, ys = [], []
    for source, fake in pairs:
        xs.append(luminance(source[:, ::stride, ::stride], source_stats).ravel())
        ys.append(luminance(fake[:, ::stride, ::stride], fake_stats).ravel())
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0  # a constant image has no order to keep
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their mean rank: ``scipy.stats.rankdata(values)`` (so the Pearson
    correlation of two of them is ``scipy.stats.spearmanr``) in one sort. On a Dubai tone check (4.6 M pixels,
    ~10^5 distinct luminances each) the whole correlation took 1.8 s against 2.2-3.2 s with spearmanr."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts, dtype=np.float64)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def store_tone_order(source, fake, stride: int = 4) -> float:
    """:func:`tone_order` of a stylized city store (rasters named as the source's) against its source."""
    pairs = ((source.read(r.id, step=stride), fake.read(r.id, step=stride)) for r in source.rasters)
    return tone_order(pairs, source.band_stats, fake.band_stats, stride=1)
