"""The label-free score of an adapted U-net: how far its training imagery is from the target city, seen
through the U-net's own encoder.

Why this score: the bound of domain adaptation (Ben-David et al. 2010) says a model's target error is at
most its error on its training data plus a divergence between the two input distributions. A U-net
fine-tuned on a stylized source fits that stylized source well (it has its labels), so what decides its
target error is how far the stylized source is from the target *in the features the U-net segments
with*. We measure it as the Fréchet distance between Gaussian fits of the encoder's feature vectors (one
vector per position of its deepest level) over random patches of the training imagery and of the target,
divided by the total variance of the target's features (one scale for every model and city). It needs
the source's labels only through the fine-tuned model and never the target's. The score is
``−distance`` (higher = better).

Why the U-net's *own* encoder and its deepest level: the study of docs/label-free-selection.md compared it
with the source U-net's encoder (one feature space for every method: it rewards plain colour matching,
e.g. histogram matching, whose segmentation is poor), a middle level, the normalised pixels (a
colour-only control, ρ 0.26) and the agreement and confidence scores (which ranked methods backwards).
The measured Spearman ρ of each with target mIoU is kept there, with the commands.

:func:`feature_distances` works on arrays; :func:`store_distance` samples the patches from city stores
(the source itself for ``source_only``, a method's stylized source otherwise) and normalises them as the
checkpoint's U-net does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

#: patches sampled per side (training imagery, target): 48 of 128 px give the deepest level of the quick
#: profile's U-net (depth 4) 3072 vectors of 256 channels, enough for a stable covariance
PATCHES = 48
#: independent draws of the patches in an adapt run's score (the score is their mean; the fine-tune guard tests
#: their paired differences): over five finished runs one U-net's score moved by 0.12-2.6 between draws, as much as
#: the gaps between the methods it must rank (docs/label-free-selection.md, "How much of the score is the draw")
DRAWS = 5
#: a sampled patch is drawn again when more than this share of its pixels are nodata
MAX_NODATA = 0.1
#: the level of the score (the others are reported beside it)
SCORE_LEVEL = "deep"


@torch.no_grad()
def encoder_features(model, images: np.ndarray, zscore, levels: Sequence[int], device="cpu") -> dict[int, np.ndarray]:
    """{level: (positions, channels) float64} of the U-net's encoder at ``levels`` (-1: the normalised
    input pixels) for raw ``images`` (n, bands, h, w), normalised by ``zscore`` as the U-net's input is."""
    was_training = model.training
    model.eval()
    x = torch.from_numpy(np.stack([zscore(i) for i in images]).astype(np.float32)).to(device)
    feats = {}
    if -1 in levels:
        feats[-1] = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double().cpu().numpy()
    for i, block in enumerate(model.down):
        x = block(x if i == 0 else model.pool(x))
        if i in levels:
            feats[i] = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double().cpu().numpy()
    model.train(was_training)
    return feats


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of vectors (rows):
    ``|μa − μb|² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # symmetric PSD: its square roots sum to the trace term
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(max(distance, 0.0))


def feature_distances(model, training: np.ndarray, target: np.ndarray, zscore, device="cpu") -> dict[str, float]:
    """{"deep", "mid", "pixel"}: Fréchet distances between the ``training`` and ``target`` patches' features
    at the encoder's deepest level, its middle level and the normalised pixels, each divided by the total
    variance of the target's features at that level."""
    deepest = len(model.down) - 1
    levels = {"deep": deepest, "mid": deepest // 2, "pixel": -1}
    fa = encoder_features(model, training, zscore, tuple(levels.values()), device)
    fb = encoder_features(model, target, zscore, tuple(levels.values()), device)
    out = {}
    for name, level in levels.items():
        spread = float(np.trace(np.atleast_2d(np.cov(fb[level], rowvar=False))))
        out[name] = float(f"{frechet(fa[level], fb[level]) / max(spread, 1e-12):.6g}")
    return out


def sample_patches(store, size: int, count: int = PATCHES, seed: int = 0) -> np.ndarray:
    """(count, bands, size, size) raw patches of a city store at random places (rasters drawn by area),
    each with at most :data:`MAX_NODATA` nodata pixels. The same seed gives the same places in every store
    of the same rasters (a source and its stylized copies)."""
    return sample_labelled_patches(store, size, count, seed)[0]


def sample_labelled_patches(store, size: int, count: int = PATCHES, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`sample_patches` with the patches' labels, (count, size, size) (None for a store without labels)."""
    rasters = [r for r in store.rasters if r.height >= size and r.width >= size]
    if not rasters:
        raise ValueError(f"{store.path}: no raster is {size} px on a side, the U-net's patch size")
    rng = np.random.default_rng(seed)
    area = np.array([r.height * r.width for r in rasters], np.float64)
    images: list[np.ndarray] = []
    labels: list[np.ndarray | None] = []
    for _ in range(count * 20):  # a city mostly of nodata would loop for ever
        r = rasters[rng.choice(len(rasters), p=area / area.sum())]
        y, x = int(rng.integers(0, r.height - size + 1)), int(rng.integers(0, r.width - size + 1))
        image, label = store.read_window(r.id, y, x, size, size)
        if 1 - store.valid_mask(image).mean() <= MAX_NODATA:
            images.append(image)
            labels.append(label)
            if len(images) == count:
                return np.stack(images), (None if labels[0] is None else np.stack(labels))
    raise ValueError(f"{store.path}: fewer than {count} patches of {size} px with at most {MAX_NODATA:.0%} nodata")


def store_distance(checkpoint: str | Path, training_store: str | Path, target_store: str | Path, *,
                   count: int = PATCHES, seed: int = 0, draws: int = 1, device: str = "cpu") -> dict:
    """``{"label_free": −deep distance, "distance": {deep, mid, pixel}, "draws": [−deep distance of each draw]}``
    of the U-net in ``checkpoint``, trained on the imagery of ``training_store``, on the city of ``target_store``
    (paths of city stores); with several ``draws``, each level's distance is the mean over the draws. Draw ``k``
    samples the training imagery with seed ``seed + 2k`` and the target with ``seed + 2k + 1``, so draw 0 is the
    one-draw score and every U-net of a run is scored on the same places."""
    from semi2i.data.store import CityStore
    from semi2i.segment import SegmentationModel

    model = SegmentationModel(checkpoint, device=device)
    training, target = CityStore(training_store), CityStore(target_store)
    for store in (training, target):
        if store.num_bands != model.in_bands:
            raise ValueError(f"{store.path}: {store.num_bands} bands, the U-net {checkpoint} takes {model.in_bands}")
    size = model.patch_size
    each = [feature_distances(model.model, sample_patches(training, size, count, seed + 2 * k),
                              sample_patches(target, size, count, seed + 2 * k + 1), model.stats.zscore, model.device)
            for k in range(draws)]
    distances = {level: float(f"{np.mean([d[level] for d in each]):.6g}") for level in each[0]}
    return {"label_free": -distances[SCORE_LEVEL], "distance": distances, "draws": [-d[SCORE_LEVEL] for d in each]}
