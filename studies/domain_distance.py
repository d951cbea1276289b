"""The label-free score's study harness: how far a method's stylized source is from the target, seen
through a U-net's encoder, on the in-memory Dubai tiles of study_budget.py (the product computes the same
distances from city stores: semi2i.domain_distance, whose functions this calls).

Why this one: the agreement scores of docs/label-free-selection.md vote (their sign follows who else
ran) and reverse validation leans on a fixed radiometric bridge. The classic bound of domain adaptation
(Ben-David et al. 2010: target error <= source error + a divergence between the two input
distributions) suggests scoring each candidate alone by that divergence: a U-net fine-tuned on a stylized
source that the network cannot tell from the target should map the target as well as it fits the
stylized source. Measured as the Fréchet distance between Gaussian fits of encoder feature vectors
(one vector per position of the deepest and of the middle level) of random patches of the stylized
source and of the target, both normalised with the source statistics as the fine-tune and the
scoring do. ``base``: the features of the *source* U-net (one space for every candidate of a seed);
``own``: those of the candidate's fine-tuned U-net; ``pixel``: the normalised pixels (a colour-only control).
Lower = closer; the studies report ``-distance``.
"""

from __future__ import annotations

import numpy as np

from semi2i.domain_distance import feature_distances


def _patches(rasters, size: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        im = rasters[rng.integers(len(rasters))][0]
        y, x = rng.integers(0, im.shape[1] - size + 1), rng.integers(0, im.shape[2] - size + 1)
        out.append(im[:, y : y + size, x : x + size])
    return np.stack(out)


def domain_distance(model, stylized, target, stats, device, size: int = 128, count: int = 48, seed: int = 0) -> dict:
    """{"deep": d, "mid": d, "pixel": d}: the product's :func:`semi2i.domain_distance.feature_distances` of
    random patches of the stylized source (``seed``) and of the target (``seed + 1``), normalised with the
    source statistics as the fine-tune and the scoring do (4 significant digits, as the study's rows)."""
    found = feature_distances(model, _patches(stylized, size, count, seed), _patches(target, size, count, seed + 1),
                              stats.zscore, device)
    return {name: float(f"{value:.4g}") for name, value in found.items()}
