"""Class weights for the U-net's cross-entropy (``unet.class_balance``): mIoU averages the classes, plain
cross-entropy averages the pixels.

With plain cross-entropy a short training spends its steps on the classes that cover the most pixels: the
quick profile's target oracle on the Dubai main pair (300 steps from scratch) never predicts road (6 % of the
target, IoU 0.0 in three seeds of 2026-12-05), and every method's U-net is that architecture and budget.
Weighting each pixel's loss by its class's frequency to the power −α is the usual remedy in segmentation
(α = 1 is median-frequency balancing up to a scale, Eigen & Fergus 2015, used by SegNet; α = 1/2 is the
milder inverse square root). The frequencies are those of the windows the training draws, from their own
labels (the source's for the source U-net and the fine-tunes, the target's for the oracle): never the
target's labels for an adapted model. The weights are scaled so that the pixel-weighted mean is 1 (the loss
keeps its scale, so the learning rates need no change), and none exceeds :data:`MAX_WEIGHT`: a class with a
handful of labelled pixels (often label noise) would otherwise take over the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semi2i.data.class_prior import window_class_counts
from semi2i.data.patches import Window
from semi2i.data.store import open_store

#: the largest weight one class's pixels get (1 = a pixel of the average class)
MAX_WEIGHT = 10.0


def balanced_weights(counts: Sequence[float], alpha: float) -> list[float] | None:
    """Per-class weights ∝ frequency^−α with a pixel-weighted mean of 1, capped at :data:`MAX_WEIGHT`;
    a class without pixels gets 0 (it contributes no loss either way). None when α is 0 (plain
    cross-entropy) or nothing is labelled."""
    counts = np.asarray(counts, dtype=float)
    if alpha == 0 or counts.sum() <= 0:
        return None
    freq = counts / counts.sum()
    present = freq > 0
    weights = np.zeros_like(freq)
    weights[present] = freq[present] ** -alpha
    capped = np.zeros_like(present)
    while True:  # scale the uncapped classes to what keeps the mean at 1; cap any that pass the cap; again
        free = present & ~capped
        rest = 1.0 - float(freq[capped] @ weights[capped])
        weights[free] *= rest / float(freq[free] @ weights[free])
        over = free & (weights > MAX_WEIGHT)
        if not over.any():  # ends: the capped set grows each round and can never take every class (mean 1 < cap)
            break
        weights[over] = MAX_WEIGHT
        capped |= over
    return [float(w) for w in weights]


def training_class_weights(windows: Sequence[Window], num_classes: int, alpha: float) -> list[float] | None:
    """:func:`balanced_weights` of the labelled pixels of ``windows`` (the windows a U-net training draws)."""
    if alpha == 0:
        return None
    counts = np.zeros(num_classes, dtype=np.int64)
    by_store: dict[str, list[Window]] = {}
    for w in windows:
        by_store.setdefault(w.store, []).append(w)
    for store, ws in by_store.items():
        counts += window_class_counts(open_store(store), ws).sum(axis=0)[:num_classes]
    return balanced_weights(counts, alpha)
