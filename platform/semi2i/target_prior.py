"""The target city's class proportions without its labels, from a finished adapt run's own maps.

``semi2i.target_class_prior`` (``data.class_prior``) draws SemI2I's source windows in the target's class
proportions. A user rarely knows them; a finished run has mapped the target with every method and scored
each without labels (``label_free``), so the map of the method that score trusts most is the estimate.
An adapted map still misses classes (the reverse Dubai pair's best maps hold no road), and a prior of 0
would stop the generator from ever seeing that class, so no class is estimated below half its share of the
source (:data:`SOURCE_SHARE_FLOOR`): the prior may raise a class as far as the map says, and lower it at
most twofold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semi2i.data.store import CityStore, StoreError

#: No class of the prior falls below this share of its frequency in the source's labels.
SOURCE_SHARE_FLOOR = 0.5


class PriorError(ValueError):
    """A run folder that cannot give a prior (no report, no label-free scores, no maps)."""


def label_counts(store: CityStore, read) -> np.ndarray:
    """Pixels per class over every raster of ``store``; ``read(raster_id)`` returns a class map."""
    counts = np.zeros(store.num_classes, dtype=np.int64)
    for raster in store.rasters:
        classes = np.asarray(read(raster.id))
        counts += np.bincount(classes[classes < store.num_classes].ravel(), minlength=store.num_classes)
    return counts


def floored_prior(map_fractions: np.ndarray, source_fractions: np.ndarray, floor: float = SOURCE_SHARE_FLOOR) -> np.ndarray:
    """``map_fractions`` with each class raised to at least ``floor`` × its source share, renormalised."""
    prior = np.maximum(np.asarray(map_fractions, float), floor * np.asarray(source_fractions, float))
    return prior / prior.sum()


def trusted_method(report: dict) -> str:
    """The adapted method (oracle and SemI2I seeds aside) with the highest label-free score."""
    scores = {m: v["label_free"] for m, v in report.get("methods", {}).items()
              if isinstance(v, dict) and "label_free" in v and m != "target_oracle" and not m.startswith("semi2i_seed")}
    if not scores:
        raise PriorError("its report.json has no label-free scores")
    return max(scores, key=scores.get)


def estimate_target_prior(run_dir: str | Path, method: str | None = None) -> dict:
    """{"method", "label_free", "map_fractions", "source_fractions", "prior"} (fractions in class order) from
    the run's report, stores and maps; ``method`` overrides the label-free choice."""
    from semi2i.mapping import read_classes

    run = Path(run_dir)
    try:
        report = json.loads((run / "report.json").read_text())
    except (OSError, ValueError) as exc:
        raise PriorError(f"{run}: no readable report.json ({exc.__class__.__name__}): finish the run first") from None
    try:
        method = method or trusted_method(report)
    except PriorError as exc:
        raise PriorError(f"{run}: {exc}") from None
    maps = run / "maps" / method
    try:
        source, target = CityStore(run / "stores" / "source.zarr"), CityStore(run / "stores" / "target.zarr")
        mapped = label_counts(target, lambda raster: read_classes(maps, raster))
        labelled = label_counts(source, lambda raster: source.read(raster, "label"))
    except (OSError, StoreError, KeyError, ValueError) as exc:
        raise PriorError(f"{run}: cannot read the {method!r} maps or the stores ({exc})") from None
    if mapped.sum() == 0 or labelled.sum() == 0:
        raise PriorError(f"{run}: the {method!r} maps or the source labels hold no class pixel")
    map_fractions, source_fractions = mapped / mapped.sum(), labelled / labelled.sum()
    return {"method": method, "label_free": report["methods"][method].get("label_free"),
            "classes": target.class_names, "map_fractions": map_fractions.round(4).tolist(),
            "source_fractions": source_fractions.round(4).tolist(),
            "prior": floored_prior(map_fractions, source_fractions).round(4).tolist()}
