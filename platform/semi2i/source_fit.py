"""Did the source U-net learn every class of its own city? Checked on the source's labels, retrained if not.

Every method's map starts from the source U-net: the fine-tunes begin at its weights and run a fraction of its
steps. A class it never learned on the source is therefore missing from every method's target map. On the Dubai
reverse pair (sensor-D → bright), seed 0's quick-profile source U-net found 0.0 % of road's pixels *on its own
training city* (road is 7 % of them), and every method of that run mapped road at IoU 0.0 on the target, while seeds
1 and 2 found 60-65 % of road there and SemI2I mapped it at 29-31 (docs/adaptation-study.md). That seed
alone put SemI2I's three-seed spread on the pair above 6 points. The check needs the source's labels only, which
every run has, so it is no peek at the target.

The fit is measured on :data:`PATCHES` random labelled source patches (fixed places: every attempt is measured on
the same pixels). A class is **unlearned** when it covers at least :data:`MIN_SHARE` of the sampled labelled pixels
and the U-net finds less than :data:`MIN_RECALL` of them. With ``unet.source_retrains: n`` the source U-net is trained
again, with seed ``seed + 1000·k`` (the stride of :mod:`semi2i.semi2i_seeds`), up to n more times, until an attempt
leaves no class unlearned; if none does, the attempt with the highest source mIoU is kept and a warning says which
classes no map will show. A retrain costs one source U-net training (~100 s in the quick profile on 2 cores) and
happens only when the check fails.

Files: ``source_fit/unet_source_try<k>.pt`` (each attempt), ``source_fit/try<k>.json`` (its fit), ``source_fit.json``
(every attempt's fit and the choice: ``report.json["source_fit"]``); the chosen U-net is published as
``unet_source.pt`` last, so a run killed on the way trains or measures only what is missing.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from semi2i import locations, placement
from semi2i.locations import write_text

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)

#: labelled source patches (of the U-net's patch size) the fit is measured on: 64 of 128 px are 1 Mpx, ~1 s on 2 cores
PATCHES = 64
#: the places' seed: the same patches for every attempt and every run of a source
PLACES_SEED = 20261206
#: a class below this share of the sampled labelled pixels is too rare in the sample to judge
MIN_SHARE = 0.01
#: a U-net that finds less than this share of a class's own training pixels has not learned the class
MIN_RECALL = 0.05
#: seed stride between attempts (as between SemI2I seeds)
SEED_STRIDE = 1000


def measure_fit(checkpoint: str, store: str, patches: int = PATCHES, seed: int = PLACES_SEED) -> dict:
    """The U-net of ``checkpoint`` on ``patches`` labelled patches of the city store ``store``: per class its IoU,
    recall and share of the labelled pixels (%), the mIoU, and the classes it has not learned (module docstring)."""
    from semi2i.data.store import CityStore
    from semi2i.domain_distance import sample_labelled_patches
    from semi2i.metrics import confusion_matrix
    from semi2i.segment import SegmentationModel

    model, city = SegmentationModel(checkpoint), CityStore(store)
    images, labels = sample_labelled_patches(city, model.patch_size, patches, seed)
    cm = sum(confusion_matrix(model.logits(image, overlap=0).argmax(0), label, model.num_classes, model.ignore_index)
             for image, label in zip(images, labels))
    return fit_from_confusion(np.asarray(cm, np.float64), model.class_names)


def fit_from_confusion(cm: np.ndarray, class_names: list[str]) -> dict:
    """:func:`measure_fit`'s numbers from a confusion matrix (rows: the labels, columns: the predictions)."""
    from semi2i.metrics import scores

    labelled = cm.sum(1)
    share = labelled / max(cm.sum(), 1)
    recall = np.diag(cm) / np.maximum(labelled, 1)
    unlearned = [c for c, s, r in zip(class_names, share, recall) if s >= MIN_SHARE and r < MIN_RECALL]
    pct = lambda values: {c: round(100 * float(v), 2) for c, v in zip(class_names, values)}  # noqa: E731
    fit = scores(cm, class_names)  # the IoUs and mIoU as every report computes them (percent)
    return {"iou": {c: None if v is None else round(v, 2) for c, v in fit["iou"].items()}, "recall": pct(recall),
            "share": pct(share), "miou": round(fit["miou"] or 0.0, 2), "unlearned": unlearned}


def train_checked_source_unet(run: "AdaptRun", train: Callable[..., object]) -> dict:
    """Train the source U-net (``train(stage=, output=, seed=)`` trains one attempt into ``output``, relative to the
    run folder), measure each attempt's fit, retrain while a class is unlearned and retrains are left, publish the
    chosen attempt as ``unet_source.pt``; returns ``source_fit.json``'s record."""
    retrains = run.cfg.profile.unet.source_retrains
    source = str(Path(run.store("source").path).absolute())
    run.path("source_fit").mkdir(parents=True, exist_ok=True)
    attempts: list[dict] = []
    for k in range(retrains + 1):
        output, seed = f"source_fit/unet_source_try{k}.pt", run.cfg.seed + SEED_STRIDE * k
        if not run.path(output).exists():
            train(stage="unet_source" if k == 0 else f"unet_source_try{k}", output=output, seed=seed)
        measured = run.path("source_fit", f"try{k}.json")
        if not measured.exists():
            (fit,) = placement.run_each(functools.partial(measure_fit, store=source),
                                        [str(run.path(output).absolute())], stage="source_fit")
            write_text(measured, json.dumps({"attempt": k, "seed": seed, **fit}, indent=1))
        attempts.append(json.loads(measured.read_text()))
        if not attempts[-1]["unlearned"]:
            break
        if k < retrains:
            log.warning("source U-net (seed %d) has not learned %s on its own city (recall %s %%): training it again "
                        "with seed %d (unet.source_retrains: %d)", seed, ", ".join(attempts[-1]["unlearned"]),
                        ", ".join(str(attempts[-1]["recall"][c]) for c in attempts[-1]["unlearned"]),
                        seed + SEED_STRIDE, retrains)
    chosen = choose(attempts)
    record = {**attempts[chosen], "chosen": chosen, "attempts": attempts,
              "rule": f"a class with >= {MIN_SHARE:.0%} of the sampled labelled source pixels of which the U-net finds "
                      f"< {MIN_RECALL:.0%} is unlearned; retrain (seed + {SEED_STRIDE}·k, up to unet.source_retrains "
                      "times) until none is, else keep the highest source mIoU"}
    if record["unlearned"]:
        log.warning("source U-net: %s not learned on the source in %d attempt(s); no method's map will show %s "
                    "(raise unet.source_retrains, unet.train_steps or unet.class_balance)", ", ".join(record["unlearned"]),
                    len(attempts), "it" if len(record["unlearned"]) == 1 else "them")
    write_text(run.path("source_fit.json"), json.dumps(record, indent=1))
    # a copy renamed into place: a later stage never sees half a checkpoint
    locations.location(run.unet_path("source_only")).upload(run.path(f"source_fit/unet_source_try{chosen}.pt"))
    return record


def choose(attempts: list[dict]) -> int:
    """The first attempt that learned every class, else the one with the highest source mIoU (the first of equals)."""
    for k, fit in enumerate(attempts):
        if not fit["unlearned"]:
            return k
    return max(range(len(attempts)), key=lambda k: (attempts[k]["miou"], -k))

