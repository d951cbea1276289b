"""The unsupervised proxy of a stylized source (lower is better): :func:`style_distance` to the target
+ :func:`structure_loss` against the source."""

from __future__ import annotations

import numpy as np

from semi2i.data.normalize import QUANTILE_LEVELS, BandStats


def style_distance(fake: BandStats, target: BandStats) -> float:
    """How far the fakes' pixel distribution is from the target's: per band, the 1-D Wasserstein
    distance (mean |quantile difference| over the 1001 quantiles kept at ingest) in units of the target
    band's standard deviation, averaged over bands. 0 = identical histograms; a shift by c gives c/std."""
    if fake.num_bands != target.num_bands:
        raise ValueError(f"fake has {fake.num_bands} bands, target {target.num_bands}")
    diff = np.abs(np.asarray(fake.quantiles, np.float64) - np.asarray(target.quantiles, np.float64))
    w1 = np.trapezoid(diff, QUANTILE_LEVELS, axis=1)
    return float(np.mean(w1 / np.maximum(np.asarray(target.std, np.float64), 1e-6)))


def _edges(image: np.ndarray, stats: BandStats, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed x and y gradients of the band-mean of z-scored bands (any band count), stacked, and where
    they are defined. Signed, not magnitudes: a generator that inverts tones (dark water painted light,
    light land painted dark, seen on the Dubai bright -> sensor-D pair) keeps every edge's position but
    flips its sign, and that ruins fine-tuning as surely as a lost edge."""
    from semi2i.diagnostics import luminance

    lum = luminance(image, stats)
    gy = lum[1:, :-1] - lum[:-1, :-1]
    gx = lum[:-1, 1:] - lum[:-1, :-1]
    ok = valid[:-1, :-1] & valid[1:, :-1] & valid[:-1, 1:]
    return np.stack([gx, gy]), np.stack([ok, ok])


def structure_loss(source: np.ndarray, fake: np.ndarray, source_stats: BandStats, fake_stats: BandStats,
                   valid: np.ndarray | None = None) -> tuple[float, int]:
    """1 − Pearson correlation of the signed gradients of a source raster and its fake (in [0, 2]):
    0 when the fake keeps every edge and its direction (any brightening, darkening or contrast change),
    ~1 when the structure is lost (noise, a flat image), ~2 when the tones are inverted. Returns (loss,
    pixels counted)."""
    if valid is None:
        valid = np.ones(source.shape[1:], bool)
    e_src, ok = _edges(source, source_stats, valid)
    e_fake, _ = _edges(fake, fake_stats, valid)
    a, b = e_src[ok], e_fake[ok]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 1.0, int(a.size)
    return float(1.0 - np.corrcoef(a, b)[0, 1]), int(a.size) // 2


def proxy_metrics(source, fake, target) -> dict:
    """``proxy = style_distance + structure_loss`` of a stylized source (``fake``, rasters named as the
    source's) against the target and the source; both terms are 0 for a perfect SemI2I output."""
    style = style_distance(fake.band_stats, target.band_stats)
    total, weight = 0.0, 0
    for info in source.rasters:
        src = source.read(info.id)
        loss, n = structure_loss(src, fake.read(info.id), source.band_stats, fake.band_stats,
                                 source.valid_mask(src))
        total, weight = total + loss * n, weight + n
    structure = total / weight if weight else 1.0
    return {"proxy": style + structure, "style_distance": style, "structure_loss": structure}
