"""Label-free selection: which adapted model to trust on a target city nobody has labelled.

The scores here see only the candidates' class maps of the target (and the source's class frequencies),
never target labels. The main one rests on a simple fact: there is one right map of a city and many
wrong ones. Models that map the target well agree with each other because they agree with the truth;
models that fail, fail in their own ways (a colour cast read as water, a sensor's haze read as road),
so they agree less with everybody. This is the premise of ranking predictors without labels (Parisi et
al., PNAS 2014, "Ranking and combining multiple predictors without labeled data", whose spectral
ranking is the leading eigenvector of the candidates' agreement matrix) and of agreement-based
accuracy estimation (Platanios et al., 2016).

* :func:`agreement_matrix`: mIoU of every pair of candidates' maps, one against the other (symmetric:
  a class's IoU does not depend on which map is the reference);
* :func:`agreement_scores`: each candidate's mean agreement with the others (``mean``) and the same
  mean weighted by the leading eigenvector of the agreement matrix (``spectral``), which discounts a
  clique of failing candidates that agree mostly among themselves;
* :func:`class_balance`: 1 − the total-variation distance between a map's class frequencies and the
  source labels' (a sanity score: a model that paints the whole city one class scores low).

Each score is meant as higher = better. What they are worth is measured, not assumed
(docs/label-free-selection.md): on the Dubai main pair all of them ranked the methods *backwards*
(failing methods that share the source model's bias agree with each other), so none is shipped as a
quality score (the report's ``label_free`` is :mod:`semi2i.domain_distance`); the agreement functions serve the medoid choice among one method's seeds
(:mod:`semi2i.semi2i_seeds`) and the selection study.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def confusion(pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int, valid: np.ndarray | None = None) -> np.ndarray:
    """(C, C) counts of (class in ``pred_a``, class in ``pred_b``) over the ``valid`` pixels."""
    a, b = np.asarray(pred_a).ravel(), np.asarray(pred_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {pred_a.shape} vs {pred_b.shape}")
    keep = (a < num_classes) & (b < num_classes)
    if valid is not None:
        keep &= np.asarray(valid, bool).ravel()
    idx = a[keep].astype(np.int64) * num_classes + b[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def agreement_from_confusion(cm: np.ndarray) -> float:
    """Mean IoU of two maps over the classes either one uses (1 = identical maps)."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    used = union > 0
    return float((inter[used] / union[used]).mean()) if used.any() else 1.0


def agreement_matrix(maps: Mapping[str, Sequence[np.ndarray]], num_classes: int,
                     valid: Sequence[np.ndarray] | None = None) -> tuple[list[str], np.ndarray]:
    """Names and the (K, K) matrix of pairwise agreements of K candidates' maps.

    ``maps[name]`` is one class map per target raster (the same rasters, in the same order, for every
    candidate; a lazy sequence that reads on indexing keeps one raster per candidate in memory);
    ``valid`` optionally masks nodata pixels per raster. The diagonal is 1.
    """
    names = list(maps)
    if len(names) < 2:
        raise ValueError("agreement needs at least two candidates")
    counts = {len(maps[n]) for n in names}
    if len(counts) != 1:
        raise ValueError(f"candidates have different numbers of rasters: { {n: len(maps[n]) for n in names} }")
    k = len(names)
    counts = {(i, j): np.zeros((num_classes, num_classes), np.int64) for i in range(k) for j in range(i + 1, k)}
    for r in range(len(maps[names[0]])):  # one raster of every candidate in memory at a time
        rasters = [np.asarray(maps[n][r]) for n in names]
        mask = None if valid is None else valid[r]
        for (i, j), cm in counts.items():
            cm += confusion(rasters[i], rasters[j], num_classes, mask)
    matrix = np.eye(k)
    for (i, j), cm in counts.items():
        matrix[i, j] = matrix[j, i] = agreement_from_confusion(cm)
    return names, matrix


def agreement_scores(names: Sequence[str], matrix: np.ndarray, voters: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per candidate: ``mean`` agreement with the voters and ``spectral``, its agreement with the voters
    weighted by how trustworthy each voter is.

    The weights are the leading (Perron) eigenvector of the voters' agreement matrix without its diagonal
    (Parisi et al. 2014): a voter that agrees with many others that agree with many others weighs more,
    so a clique of failures that agree mostly among themselves counts less. Both scores are weighted
    means of agreements, in [0, 1]. A candidate never votes on itself. ``voters`` (default: every
    candidate) are the candidates whose maps count as evidence; a model trained on the target's own
    labels (the oracle) must be scored but never vote, or the scores would see the labels.
    """
    index = {n: i for i, n in enumerate(names)}
    voters = list(names if voters is None else voters)
    if len(voters) < 2:
        raise ValueError("agreement needs at least two voters")
    v = [index[n] for n in voters]
    sub = np.asarray(matrix, np.float64)[np.ix_(v, v)]
    sub = sub - np.diag(np.diag(sub))
    values, vectors = np.linalg.eigh(sub)
    weight = np.abs(vectors[:, np.argmax(values)])
    out = {}
    for name in names:
        row = np.asarray(matrix, np.float64)[index[name], v]
        others = np.array([voter != name for voter in voters])
        w = weight[others]
        mean = float(row[others].mean())
        spectral = float((row[others] * w).sum() / w.sum()) if w.sum() > 0 else mean
        out[name] = {"mean": mean, "spectral": spectral}
    return out


def class_frequencies(maps: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
    """Fraction of pixels per class (values >= ``num_classes``, e.g. ignore, are left out)."""
    counts = np.zeros(num_classes, np.int64)
    for m in maps:
        m = np.asarray(m).ravel()
        counts += np.bincount(m[m < num_classes].astype(np.int64), minlength=num_classes)[:num_classes]
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def class_balance(maps: Iterable[np.ndarray], source_frequencies: np.ndarray) -> float:
    """1 − total-variation distance between the maps' class frequencies and the source's (in [0, 1])."""
    freq = class_frequencies(maps, len(source_frequencies))
    return float(1.0 - 0.5 * np.abs(freq - np.asarray(source_frequencies, np.float64)).sum())
