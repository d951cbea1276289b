"""report.json of jobs/adapt.py: target scores where the target has labels, and for every method a
label-free score (:mod:`semi2i.selection`) whether or not it has.

``methods[m]`` holds ``iou``/``miou``/``pixel_accuracy`` (labels only), ``label_free`` (always, higher =
better: the method's map's agreement with the other methods' maps, weighted by how trustworthy each is),
``tone_order`` (stylized methods), ``note`` (the oracle) or ``not_applicable`` (why it cannot run on
this pair). With several SemI2I seeds (``semi2i.seeds``), every seed has its row ``semi2i_seed<k>``,
``semi2i`` is the chosen one and ``semi2i_choice`` says which and by what score.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np

from semi2i.selection import agreement_matrix, agreement_scores

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)

#: The label-free score the report and the seed choice use (a key of selection.agreement_scores).
LABEL_FREE_SCORE = "spectral"
#: Models that saw the target's labels: scored, but never voters.
LABELLED_METHODS = ("target_oracle",)
REPORT_NOTES = {"target_oracle": "upper bound: trained on the target's own labels, not an adaptation method"}


class _LazyMaps(Sequence):
    """One method's class maps of the target rasters, read on indexing (one raster at a time)."""

    def __init__(self, run: "AdaptRun", method: str, rasters: list[str]):
        self.run, self.method, self.rasters = run, method, rasters

    def __len__(self) -> int:
        return len(self.rasters)

    def __getitem__(self, index: int) -> np.ndarray:
        from semi2i.mapping import read_classes

        return read_classes(self.run.path("maps", self.method), self.rasters[index])


def label_free_scores(run: "AdaptRun", methods: Sequence[str]) -> dict[str, float | None]:
    """``method -> label-free score`` for every method with a finished map of the target; None for all
    when fewer than two methods without target labels (voters) have maps."""
    target = run.store("target")
    mapped = [m for m in methods if run.path("maps", m, "job.json").exists()]
    voters = [m for m in mapped if m not in LABELLED_METHODS]
    if len(voters) < 2:
        return {m: None for m in mapped}
    rasters = [r.id for r in target.rasters]
    names, matrix = agreement_matrix({m: _LazyMaps(run, m, rasters) for m in mapped}, target.num_classes)
    scores = agreement_scores(names, matrix, voters=voters)
    return {m: round(scores[m][LABEL_FREE_SCORE], 4) for m in names}


def build_report(run: "AdaptRun", methods: Sequence[str], label_free: dict[str, float | None]) -> dict:
    """The report of a finished run over ``methods`` (the config's, with SemI2I's seed rows expanded);
    ``label_free``: :func:`label_free_scores` of the methods that have maps. Without target labels each
    method's entry holds its label-free score alone."""
    target = run.store("target")
    rows: dict[str, dict] = {}
    for method in methods:
        if why := run.not_applicable(method):
            rows[method] = {"not_applicable": why}
            continue
        if method not in label_free:
            continue  # not run (skipped stage, untrained GAN)
        if not target.has_labels:
            rows[method] = {"label_free": label_free[method]}
            continue
        score = json.loads(run.path("scores", f"{method}.json").read_text())
        row = {"iou": score["iou"], "miou": score["miou"], "pixel_accuracy": score["pixel_accuracy"],
               "label_free": label_free[method]}
        if method in REPORT_NOTES:
            row["note"] = REPORT_NOTES[method]
        if (order := run.tone_check(method)) is not None:
            row["tone_order"] = order
        rows[method] = row
    report = {
        "source": run.store("source").name,
        "target": target.name,
        "classes": target.class_names,
        "profile": run.cfg.profile.name,
        "methods": rows,
        "seed": run.cfg.seed,
        "config": run.cfg.name,
        "label_free_score": f"{LABEL_FREE_SCORE} agreement of the target maps (semi2i.selection)",
    }
    choice = run.path("semi2i_choice.json")
    if choice.exists():
        report["semi2i_choice"] = json.loads(choice.read_text())
    if all("miou" in rows.get(m, {}) for m in ("source_only", "semi2i", "target_oracle")):
        gap = rows["target_oracle"]["miou"] - rows["source_only"]["miou"]
        if gap:
            report["semi2i_gap_closed"] = round((rows["semi2i"]["miou"] - rows["source_only"]["miou"]) / gap, 4)
    return report
