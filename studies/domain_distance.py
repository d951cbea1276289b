"""A label-free candidate score for issue 19: how far a method's stylized source is from the target,
seen through a U-net's encoder (research code for the studies, not the product's path).

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
import torch


def _patches(rasters, size: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        im = rasters[rng.integers(len(rasters))][0]
        y, x = rng.integers(0, im.shape[1] - size + 1), rng.integers(0, im.shape[2] - size + 1)
        out.append(im[:, y : y + size, x : x + size])
    return np.stack(out)


@torch.no_grad()
def encoder_features(model, images: np.ndarray, stats, levels: tuple[int, ...], device) -> dict[int, np.ndarray]:
    """{level: (positions, channels)} feature vectors of the U-net's encoder at ``levels`` (-1: the input pixels)."""
    was_training = model.training
    model.eval()
    x = torch.from_numpy(np.stack([stats.zscore(i) for i in images]).astype(np.float32)).to(device)
    feats = {-1: x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double().cpu().numpy()} if -1 in levels else {}
    for i, block in enumerate(model.down):
        x = block(x if i == 0 else model.pool(x))
        if i in levels:
            feats[i] = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double().cpu().numpy()
    model.train(was_training)
    return feats


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of vectors (rows)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(cov_a cov_b) from the eigenvalues of sqrt(cov_a) cov_b sqrt(cov_a) (symmetric, PSD)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def domain_distance(model, stylized, target, stats, device, size: int = 128, count: int = 48, seed: int = 0) -> dict:
    """{"deep": d, "mid": d, "pixel": d}: Fréchet distances between the stylized source's and the target's
    features, divided by the total variance of the target's. ``pixel`` (the normalised bands themselves, the
    same for every model) is the colour-only control: what the features add over it is what they know."""
    deepest = len(model.down) - 1
    levels = {"mid": deepest // 2, "deep": deepest, "pixel": -1}
    fa = encoder_features(model, _patches(stylized, size, count, seed), stats, tuple(levels.values()), device)
    fb = encoder_features(model, _patches(target, size, count, seed + 1), stats, tuple(levels.values()), device)
    # relative to the target features' total variance, so levels and models are on one scale
    return {name: float(f"{frechet(fa[level], fb[level]) / np.trace(np.cov(fb[level], rowvar=False)):.4g}")
            for name, level in levels.items()}
