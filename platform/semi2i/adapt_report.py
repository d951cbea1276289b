"""report.json of jobs/adapt.py: every method's scores on the target's labels and without them.

``methods[m]`` holds ``iou``/``miou``/``pixel_accuracy``, ``tone_order`` (stylized methods), ``note``
(the oracle) and ``label_free`` (:mod:`semi2i.label_free`: higher = better, computed without target
labels), or ``not_applicable`` (why it cannot run on this pair). A target without labels gets the same
report with ``label_free`` alone in each method's row. With several SemI2I seeds
(``semi2i.seeds``) every seed has its row ``semi2i_seed<k>``, ``semi2i`` is the one chosen without
labels and ``semi2i_choice`` says which and why (:mod:`semi2i.semi2i_seeds`). With ``unet.finetune_guard``,
``finetune_guard[m]`` (beside ``methods``) records what the fine-tuned method ``m`` maps with (``maps_with``: its
fine-tune, the source U-net, or the two's weight average) and the two label-free scores that decided it
(:mod:`semi2i.finetune_guard`); a method that maps with the source U-net has the source U-net's ``label_free``, an
averaged one its fine-tune's capped at the source U-net's (since 2026-12-06). ``source_fit`` (beside ``methods``)
is the source U-net's fit on its own city's labels, per class, with the classes it did not learn and its retrains
(:mod:`semi2i.source_fit`). ``label_free_pick`` (beside ``methods``, since 2026-12-07) names the method the platform
would trust without target labels and whether the score can tell it from the runner-up (:func:`pick_evidence`).
``reference_agreement`` (beside ``methods``, since 2026-12-07, with ``unet.reference_steps``) holds each method's
agreement with the colour-blind reference map of the target, the mIoU in percent of its map against that map
(:mod:`semi2i.colour_blind`), labels or not; where it is present the pick is the method that agrees best, and
``label_free_pick["by"]`` says which score picked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from semi2i.finetune_guard import SIGNIFICANCE, fell_back, guard_record, lead_p_value, maps_with, trusted_score
from semi2i.report_table import label_free_pick

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

REPORT_NOTES = {"target_oracle": "upper bound: trained on the target's own labels, not an adaptation method"}


def build_report(run: "AdaptRun", methods: Sequence[str], label_free: Mapping[str, dict] | None = None,
                 agreement: Mapping[str, float] | None = None) -> dict:
    """The report of a finished run over ``methods`` (the config's, with SemI2I's seed rows expanded);
    ``label_free``: :func:`semi2i.label_free.score_methods` of them; ``agreement``: their maps' agreement with the
    colour-blind reference (:func:`semi2i.colour_blind.agreements`)."""
    target = run.store("target")
    label_free, agreement = label_free or {}, agreement or {}
    rows: dict[str, dict] = {}
    for method in methods:
        if why := run.not_applicable(method):
            rows[method] = {"not_applicable": why}
            continue
        free = {"label_free": reported_score(run, method, label_free)} if method in label_free else {}
        scores = run.path("scores", f"{method}.json")
        if not target.has_labels:
            if free:
                rows[method] = free
            continue
        if not scores.exists():
            continue  # not run (skipped stage, untrained GAN)
        score = json.loads(scores.read_text())
        row = {"iou": score["iou"], "miou": score["miou"], "pixel_accuracy": score["pixel_accuracy"], **free}
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
    }
    guarded = {m: record for m in methods if (record := guard_record(run, m)) is not None}
    if guarded:  # labels or not (it needs none); beside ``methods``, whose rows keep their keys
        report["finetune_guard"] = guarded
    fit = run.path("source_fit.json")
    if fit.exists():  # the source U-net's fit on its own city and its retrains (semi2i.source_fit); labels or not
        report["source_fit"] = json.loads(fit.read_text())
    choice = run.path("semi2i_choice.json")
    if choice.exists():
        report["semi2i_choice"] = json.loads(choice.read_text())
    agreed = {m: agreement[m] for m in rows if m in agreement and "not_applicable" not in rows[m]}
    if agreed:  # labels or not; beside ``methods``, whose rows keep their keys
        report["reference_agreement"] = agreed
    if (pick := pick_evidence(run, rows, label_free, agreed)) is not None:
        report["label_free_pick"] = pick
    closed = gap_closed(rows)
    if closed is not None:
        report["semi2i_gap_closed"] = closed
    return report


def reported_score(run: "AdaptRun", method: str, label_free: Mapping[str, dict]) -> float:
    """``methods[method]["label_free"]``: the method's score (``label_free/<method>.json``); where the fine-tune
    guard maps the method with a fallback, the source U-net's, or capped at it for a weight average (:func:`trusted_score`)."""
    score = label_free[method]["label_free"]
    record = guard_record(run, method)
    if not fell_back(record):
        return score
    return trusted_score(score, _source_unet(label_free, record, "label_free"), maps_with(record))


def reported_draws(run: "AdaptRun", method: str, label_free: Mapping[str, dict]) -> list[float] | None:
    """The per-draw scores behind ``methods[method]["label_free"]``, with the guard's fallback applied draw by draw
    (the source U-net's draws; for a weight average the lower of the two in each draw). None: no draws kept."""
    draws = label_free[method].get("draws")
    record = guard_record(run, method)
    if not draws or not fell_back(record):
        return draws
    source = _source_unet(label_free, record, "draws")
    return list(source) if maps_with(record) == "source_unet" else list(np.minimum(draws, source))


def _source_unet(label_free: Mapping[str, dict], record: dict, key: str):
    """The source U-net's ``key`` (``label_free`` or ``draws``): the run's source-only score, else the one the guard
    decided on (a config may leave source-only out)."""
    return label_free["source_only"][key] if "source_only" in label_free else record[f"{key}_source_only"]


def pick_evidence(run: "AdaptRun", rows: Mapping[str, dict], label_free: Mapping[str, dict],
                  agreement: Mapping[str, float] | None = None) -> dict | None:
    """``report["label_free_pick"]``: the method the report trusts without target labels, the oracle left out
    (:func:`semi2i.report_table.label_free_pick`), which score picked it (``by``), the runner-up and the lead.

    By the colour-blind reference (``agreement``, where the run has one): the lead is in agreement points and
    there is no test (one reference map); the runner-up is the best other method whose map agrees differently (a
    method the guard maps with the source U-net has source-only's map). By the label-free score: the lead is over its
    draws, with the one-sided p-value of a paired t-test over them (the same patches for every U-net of a run). Why:
    a user without labels cannot see whether the pick won by a margin or by the draw; where p >= 0.05 the score does
    not separate the two, and on the committed runs such near ties hid mIoU gaps of up to 14.7 points
    (docs/label-free-selection.md, "How sure is the pick?"). None without a method to pick."""
    scored = {m: row for m, row in rows.items() if m != "target_oracle"}
    agreed = {m: a for m, a in (agreement or {}).items() if m in scored}
    pick = label_free_pick(scored, agreed)
    if pick is None:
        return None
    if agreed:
        others = [m for m in agreed if agreed[m] != agreed[pick]]
        runner_up = max(others, key=agreed.get) if others else None
        return {"method": pick, "by": "reference_agreement", "runner_up": runner_up,
                "lead": round(agreed[pick] - agreed[runner_up], 4) if runner_up else None, "p_value": None,
                "significant": None}
    draws = {m: d for m in scored if m in label_free and (d := reported_draws(run, m, label_free))}
    if pick not in draws:
        return None
    others = [m for m in draws if list(draws[m]) != list(draws[pick])]
    evidence = {"method": pick, "by": "label_free", "runner_up": None, "lead": None, "p_value": None, "significant": None}
    if others:
        runner_up = max(others, key=lambda m: scored[m]["label_free"])
        p = lead_p_value(draws[pick], draws[runner_up])
        evidence.update(runner_up=runner_up, lead=round(float(np.mean(np.subtract(draws[pick], draws[runner_up]))), 6),
                        p_value=round(p, 4), significant=p < SIGNIFICANCE)
    return evidence


#: mIoU points between source-only and the target oracle below which there is no gap to close: a share of it
#: would be noise (tiny budgets on the benchmark's synthetic pair gave 3.42 vs 3.42 and "closes -3485 %")
MIN_GAP_MIOU = 1.0


def gap_closed(rows: dict[str, dict]) -> float | None:
    """SemI2I's share of the source-only -> oracle mIoU gap; None without the three scores or without a gap."""
    if not all(rows.get(m, {}).get("miou") is not None for m in ("source_only", "semi2i", "target_oracle")):
        return None
    gap = rows["target_oracle"]["miou"] - rows["source_only"]["miou"]
    if gap < MIN_GAP_MIOU:
        return None
    return round((rows["semi2i"]["miou"] - rows["source_only"]["miou"]) / gap, 4)
