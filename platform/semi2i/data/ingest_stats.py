"""Per-band statistics of the ingest pass: exact histograms for <=16-bit integers, a strided sample otherwise.

Mergeable per strip and per raster. Valid float pixels that are +-inf are counted, not summed:
one infinite pixel would make the mean infinite and the std NaN, so ingest refuses such rasters.
"""

from __future__ import annotations

import numpy as np

from .normalize import QUANTILE_LEVELS, BandStats

#: Above this many bits, per-block histograms are replaced by a strided sample for quantiles.
_MAX_HIST_BITS = 16
_SAMPLE_PER_BAND = 2_000_000


class StatsAccumulator:
    """Mergeable per-band sums and histograms (or samples) of valid pixels."""

    def __init__(self, bands: int, dtype: np.dtype):
        self.bands, self.dtype = bands, np.dtype(dtype)
        self.count = 0
        self.nonfinite = 0  # valid (non-NaN, non-nodata) float pixels that are +-inf
        self.sum = np.zeros(bands)
        self.sumsq = np.zeros(bands)
        self.exact = self.dtype.kind in "iub" and self.dtype.itemsize * 8 <= _MAX_HIST_BITS
        self.offset = int(np.iinfo(self.dtype).min) if self.exact and self.dtype.kind == "i" else 0
        nbins = (1 << (self.dtype.itemsize * 8)) if self.exact else 0
        self.hist = np.zeros((bands, nbins), dtype=np.int64) if self.exact else None
        self.samples: list[np.ndarray] = []

    def add(self, pixels: np.ndarray) -> None:
        n = pixels.shape[1]
        if n == 0:
            return
        if self.dtype.kind == "f":
            finite = np.isfinite(pixels).all(axis=0)
            if not finite.all():
                self.nonfinite += int((~finite).sum())
                pixels = pixels[:, finite]
                n = pixels.shape[1]
                if n == 0:
                    return
        self.count += n
        if self.exact:
            # one bincount per band on the raw values (sums come from the histogram later): no int64 copy of
            # the block for unsigned data, 13x faster than shifting all bands into one bincount
            nbins = self.hist.shape[1]
            for band in range(self.bands):
                values = pixels[band] if self.offset == 0 else pixels[band].astype(np.int64) - self.offset
                self.hist[band] += np.bincount(values, minlength=nbins)
            return
        values = pixels.astype(np.float64)
        self.sum += values.sum(axis=1)
        self.sumsq += (values**2).sum(axis=1)
        step = max(1, n // 20_000)
        self.samples.append(values[:, ::step])

    def merge(self, other: "StatsAccumulator") -> None:
        self.count += other.count
        self.nonfinite += other.nonfinite
        self.sum += other.sum
        self.sumsq += other.sumsq
        if self.exact:
            self.hist += other.hist
        else:
            self.samples.extend(other.samples)

    def band_stats(self) -> BandStats:
        if self.exact:
            values = np.arange(self.hist.shape[1], dtype=np.float64) + self.offset
            self.sum, self.sumsq = self.hist @ values, self.hist @ values**2
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0.0))
        if self.exact:
            quantiles = np.stack([hist_quantiles(h, self.offset) for h in self.hist])
        else:
            sample = np.concatenate(self.samples, axis=1)
            if sample.shape[1] > _SAMPLE_PER_BAND:
                sample = sample[:, :: sample.shape[1] // _SAMPLE_PER_BAND]
            quantiles = np.quantile(sample, QUANTILE_LEVELS, axis=1).T
        return BandStats(mean=mean, std=std, quantiles=quantiles)


def hist_quantiles(hist: np.ndarray, offset: int) -> np.ndarray:
    """Quantiles of an integer histogram (lower value at each level, like numpy's 'inverted_cdf')."""
    cdf = np.cumsum(hist)
    targets = np.maximum(np.ceil(QUANTILE_LEVELS * cdf[-1]), 1)
    return (np.searchsorted(cdf, targets) + offset).astype(np.float64)
