"""Source windows drawn in the target's class proportions (label-shift correction for a GAN).

A GAN that translates source → target matches the *marginal* look of the target. When the cities hold the
classes in different proportions (the Dubai main pair: water is 6 % of the source and ~36 % of the
target), the generator is rewarded for repainting the source's surplus class in the target's majority
look, so every class drifts (SemI2I paints land, roads and buildings darker there). Drawing the source
windows with importance weights q(y)/p(y) per pixel (label-shift correction, Lipton et al. 2018) makes the
fakes' class mix the target's, so the discriminator cannot reward that drift. q (the target prior) needs no
target labels: a map of the target by any adapted model gives it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .patches import Window
from .store import CityStore


def window_class_counts(store: CityStore, windows: Sequence[Window]) -> np.ndarray:
    """(windows, classes): each window's count of labelled pixels in each class. Each raster's labels are
    read once."""
    counts = np.zeros((len(windows), store.num_classes), dtype=np.int64)
    by_raster: dict[str, list[int]] = {}
    for i, w in enumerate(windows):
        by_raster.setdefault(w.raster, []).append(i)
    for raster, indices in by_raster.items():
        label = store.read(raster, "label")
        for i in indices:
            w = windows[i]
            patch = label[w.y:w.y + w.size, w.x:w.x + w.size]
            counts[i] = np.bincount(patch[patch < store.num_classes].ravel(), minlength=store.num_classes)
    return counts


def window_class_fractions(store: CityStore, windows: Sequence[Window]) -> np.ndarray:
    """(windows, classes): each window's fraction of labelled pixels in each class (rows sum to 1, or 0
    for a window with no labelled pixel)."""
    counts = window_class_counts(store, windows).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def weighted_class_mix(fractions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The class proportions of the labelled pixels when window i is drawn with weight ``weights[i]``."""
    mix = weights @ fractions
    return mix / mix.sum()


def prior_weights(fractions: np.ndarray, target_prior: Sequence[float], iterations: int = 50) -> np.ndarray:
    """Each window's weight (mean 1): the mean over its labelled pixels of a per-class ratio r(y), starting
    at q(y)/p(y) (p the source's class frequencies, q ``target_prior``, normalised here) and raked until the
    weighted class mix is as close to q as the windows allow (classes share windows, so the first ratio
    falls short: Dubai main pair, water 26 % instead of 38 %; raked, 35 %). A class the source lacks gets
    nothing; windows without labels weigh 1."""
    q = np.asarray(target_prior, dtype=float)
    if q.shape != (fractions.shape[1],) or (q < 0).any() or q.sum() <= 0:
        raise ValueError(f"target class prior needs {fractions.shape[1]} non-negative values with a positive sum, got {list(target_prior)}")
    q = q / q.sum()
    labelled = fractions.sum(axis=1) > 0
    if not labelled.any():
        return np.ones(len(fractions))
    present = fractions[labelled].sum(axis=0) > 0
    ratio = np.where(present, q, 0.0) / np.where(present, weighted_class_mix(fractions[labelled], np.ones(labelled.sum())), 1.0)
    for _ in range(iterations):
        weights = fractions[labelled] @ ratio
        ratio = ratio / weights.mean()
        mix = weighted_class_mix(fractions[labelled], weights / weights.mean())
        ratio = np.where(present & (mix > 0), ratio * q / np.where(mix > 0, mix, 1.0), ratio)
    weights = np.where(labelled, fractions @ ratio, 0.0)
    weights = weights / weights[labelled].mean()
    return np.where(labelled, weights, 1.0)


def prior_weighted_windows(store: CityStore, windows: Sequence[Window], target_prior: Sequence[float],
                           copies: int = 8) -> list[Window]:
    """``windows`` with each repeated in proportion to its :func:`prior_weights` weight (``copies`` for a
    window of mean weight, at least 1: no window is dropped), so a seeded permutation of the list draws
    windows by weight and a resumed run replays the same stream (``patches.step_windows``)."""
    weights = prior_weights(window_class_fractions(store, windows), target_prior)
    repeats = np.maximum(1, np.rint(copies * weights / weights.mean()).astype(int))
    return [w for w, k in zip(windows, repeats) for _ in range(k)]
