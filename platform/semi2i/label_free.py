"""Each method's label-free score in an adapt run (:mod:`semi2i.domain_distance`), kept in
``label_free/<method>.json`` and reported as ``methods[m]["label_free"]`` in report.json.

The score of a method is that of its U-net on the target, against the imagery it was trained on (the mean over
:data:`~semi2i.domain_distance.DRAWS` draws of random patches, each draw's kept beside it): the
source for ``source_only``, the method's stylized source for the stylizing methods (their fine-tune's, where
the fine-tune guard maps with an average: :func:`scored_unet`), the target itself for ``target_oracle`` (whose
score is then only sampling noise: it saw the target's labels). It needs no target labels, so a run on an unlabelled city reports it too. With several SemI2I seeds, ``semi2i`` (the
chosen seed, published under that name) carries the chosen seed's score. One piece per method, placed on the
cluster like every pixel stage (:mod:`semi2i.placement`).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from semi2i import placement
from semi2i.domain_distance import DRAWS, store_distance
from semi2i.locations import write_text

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)


def training_store(run: "AdaptRun", method: str) -> Path | None:
    """The store of the imagery ``method``'s U-net was trained on (None: not in this run folder)."""
    roles = {"source_only": ("stores", "source.zarr"), "target_oracle": ("stores", "target.zarr")}
    path = run.path(*roles.get(method, ("stylized", method, "store.zarr")))
    return path if path.exists() else None


def scored_unet(run: "AdaptRun", method: str) -> Path | None:
    """The U-net whose score is the method's file's: its fine-tune, also where the fine-tune guard maps with a
    fallback (kept as ``guard/unet_<method>.pt``, :mod:`semi2i.finetune_guard`). An average of two U-nets' weights was
    trained on no imagery, and its own features are no measure: on the main Dubai pair the average of histogram
    matching's fine-tune (9.64 mIoU) scored -0.04, above every other method, ColorMapGAN's 41.22 included (-0.07).
    So an averaged method's file holds its fine-tune's score, and the report caps it at the source U-net's
    (:func:`semi2i.finetune_guard.trusted_score`): it is trusted no more than the lower of its two parents (a
    method mapped with the source U-net itself gets that U-net's score)."""
    for path in (run.path("guard", f"unet_{method}.pt"), run.unet_path(method)):
        if path.exists():
            return path
    return None


def score_methods(run: "AdaptRun", methods: Sequence[str]) -> dict[str, dict]:
    """{method: {"label_free", "distance"}} of the ``methods`` that have a U-net and its training imagery;
    each computed once (a resumed run reads ``label_free/<method>.json``)."""
    choice = run.path("semi2i_choice.json")
    chosen = json.loads(choice.read_text())["chosen"] if choice.exists() else None
    todo: dict[str, tuple[str, str]] = {}  # method -> (its U-net, its training imagery)
    out = {}
    for method in [*methods, *([chosen] if chosen and chosen not in methods else [])]:
        path = run.path("label_free", f"{method}.json")
        if path.exists() and is_current(kept := json.loads(path.read_text())):
            out[method] = kept
        elif method == "semi2i" and chosen:
            continue  # the chosen seed's published under SemI2I's name: its score, below
        elif run.not_applicable(method) is None and (unet := scored_unet(run, method)) and (training := training_store(run, method)):
            todo[method] = (str(unet), str(training))
    score = functools.partial(score_unet, target=str(run.path("stores", "target.zarr")), device="cuda" if run.cfg.gpu else "cpu")
    results = placement.run_each(score, list(todo.values()), stage="label_free", num_gpus=1 if run.cfg.gpu else 0)
    for method, result in zip(todo, results):
        write_text(run.path("label_free", f"{method}.json"), json.dumps(result, indent=1))
        log.info("label-free score of %s: %.4f", method, result["label_free"])
        out[method] = result
    if chosen and "semi2i" in methods and "semi2i" not in out and chosen in out:
        write_text(run.path("label_free", "semi2i.json"), json.dumps({**out[chosen], "chosen_from": chosen}, indent=1))
        out["semi2i"] = {**out[chosen], "chosen_from": chosen}
    return {m: out[m] for m in methods if m in out}


def is_current(score: dict) -> bool:
    """Whether a kept score was computed as this version scores (one per draw of :data:`DRAWS`): a run folder
    begun before 2026-12-06 kept a one-draw score, which a resumed run computes again rather than mix with these."""
    return len(score.get("draws", ())) == DRAWS


def score_unet(paths: tuple[str, str], target: str, device: str) -> dict:
    """One piece: the label-free score of the U-net ``paths[0]`` trained on the store ``paths[1]``, the mean of
    :data:`~semi2i.domain_distance.DRAWS` draws of patches (each draw's score kept under ``draws``)."""
    checkpoint, training = paths
    return {"checkpoint": checkpoint, "training_imagery": training,
            **store_distance(checkpoint, training, target, draws=DRAWS, device=device)}
