"""The tone-order check: 1 for any brightness-order-preserving restyling, -1 for an inversion."""

from __future__ import annotations

import numpy as np
import pytest

from semi2i.data.normalize import BandStats
from semi2i.diagnostics import tone_order


def _stats(image: np.ndarray) -> BandStats:
    return BandStats.from_pixels(image.reshape(image.shape[0], -1))


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(3, 64, 64)).astype(np.uint8)


def test_monotone_restylings_keep_the_order():
    src = _scene()
    for fake in (src, src.astype(np.float32) * 0.3 + 40):  # affine: the order is exactly kept
        assert tone_order([(src, fake)], _stats(src), _stats(fake), stride=1) > 0.999
    # a per-band gamma keeps each band's order; the band average's order only nearly (bands mix)
    gamma = (255 * (src / 255.0) ** 0.5).astype(np.float32)
    assert tone_order([(src, gamma)], _stats(src), _stats(gamma), stride=1) > 0.95


def test_inversion_and_noise():
    src = _scene()
    inverted = 255 - src
    assert tone_order([(src, inverted)], _stats(src), _stats(inverted), stride=1) < -0.99
    noise = _scene(seed=1)
    assert abs(tone_order([(src, noise)], _stats(src), _stats(noise), stride=1)) < 0.1


def test_other_band_count_and_constant_image():
    src = _scene()
    one_band = src.mean(axis=0, keepdims=True) * 2.0  # a 1-band "sensor" seeing the same brightness
    assert tone_order([(src, one_band)], _stats(src), _stats(one_band), stride=2) > 0.99
    flat = np.full_like(src, 7)
    assert tone_order([(src, flat)], _stats(src), _stats(flat)) == 0.0


def test_tone_order_is_scipys_spearman_with_ties():
    """average_ranks is scipy's rankdata ('average' ties), so the tone order is scipy.stats.spearmanr."""
    from scipy.stats import rankdata, spearmanr

    from semi2i.diagnostics import average_ranks, luminance

    ties = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert average_ranks(ties).tolist() == [5.0, 1.5, 5.0, 3.0, 5.0, 1.5] == rankdata(ties).tolist()
    src = (_scene() // 32).astype(np.uint8)  # 8 levels per band: many tied luminances
    rng = np.random.default_rng(3)
    fake = (src.astype(np.float32) * 2 + rng.integers(0, 6, src.shape)).astype(np.uint8)
    x, y = luminance(src, _stats(src)).ravel(), luminance(fake, _stats(fake)).ravel()
    assert tone_order([(src, fake)], _stats(src), _stats(fake), stride=1) == \
        pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
