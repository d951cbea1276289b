"""The scores of an adapt run's target maps: their confusion matrix against the target's labels, summed over
pieces of rasters that run as Ray tasks (:mod:`semi2i.placement`)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from semi2i import placement
from semi2i.data.store import CityStore
from semi2i.metrics import scores

#: pixels per scoring piece: a raster's confusion takes ~30 ms per Mpx and a Ray task ~0.1 s to start: one
#: task per raster took ~3.4 s per map of the Dubai target (27 rasters, 25.6 Mpx), which one process scores in 0.8 s
SCORE_PIECE_PX = 16_000_000


def score_maps(target: CityStore, maps: Path) -> dict:
    """The confusion matrix and scores of the class maps in ``maps`` against ``target``'s labels
    ({} when it has none): pieces of about :data:`SCORE_PIECE_PX` pixels (:mod:`semi2i.placement`), the
    matrices summed here."""
    if not target.has_labels:
        return {}
    ids = [r.id for r in target.rasters]
    pieces = max(1, min(len(ids), -(-sum(r.height * r.width for r in target.rasters) // SCORE_PIECE_PX)))
    piece = functools.partial(rasters_confusion, Path(target.path).absolute(), Path(maps).absolute())
    cm = sum(placement.run_each(piece, [ids[k::pieces] for k in range(pieces)], stage="score"))
    return {"confusion_matrix": cm.tolist(), **scores(cm, target.class_names)}


def rasters_confusion(target_path: Path, maps: Path, rasters: list[str]) -> np.ndarray:
    """The summed confusion matrix of ``rasters``: their class maps in ``maps`` against the target store's labels."""
    from semi2i.mapping import read_classes
    from semi2i.metrics import confusion_matrix

    target = CityStore(target_path)
    return sum(confusion_matrix(read_classes(maps, raster), target.read(raster, "label"), target.num_classes,
                                target.ignore_index) for raster in rasters)
