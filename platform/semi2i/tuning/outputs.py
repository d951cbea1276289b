"""A sweep's outputs: one row per trial and per rung from Tune's results, the best trial, how well the
label-free score and the proxy track the mIoU, and the files (results.csv/.md, rungs.csv, best.yaml,
summary.json)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from semi2i.adapt_config import load_adapt_config
from semi2i.tuning.settings import SEARCH_KEYS
from semi2i.tuning.sweep import Sweep

_LABELS = {"lambda_cross": "λ1 cross", "lambda_self": "λ2 self", "lambda_grad": "λ3 grad", "lambda_adv": "λ4 adv",
           "lambda_tone": "λ5 tone", "decay_epoch": "decay epoch"}
#: the columns of results.md and results.csv (csv key -> results.md header), in order: the markdown
#: header and every row are both built from this one mapping, so they cannot drift apart
#: (a new search key without a label fails here, at import)
RESULT_COLUMNS: dict[str, str] = {"rank": "rank", "trial": "trial", "status": "status", "rungs": "rungs",
                                  **{k: _LABELS[k] for k in SEARCH_KEYS}, "miou": "mIoU", "label_free": "label-free",
                                  "proxy": "proxy",
                                  "style_distance": "style", "structure_loss": "structure"}


#: what a rung reports about its stylized source and U-net (rungs.csv's and results.csv's score columns)
SCORES = ("miou", "label_free", "proxy", "style_distance", "structure_loss")


def collect(sweep: Sweep, grid) -> tuple[list[dict], list[dict]]:
    """One row per trial (last reported rung) and one per reported rung."""
    rows, rungs = [], []
    for result in grid:
        metrics = dict(result.metrics or {})
        config = {k: result.config.get(k) for k in SEARCH_KEYS}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        n = int(metrics.get("training_iteration", 0))
        status = ("error" if result.error else "completed" if n >= sweep.n_rungs else "stopped early" if n else "not started")
        rows.append({"trial": trial_id, "status": status, "rungs": n, **config,
                     **{k: metrics.get(k) for k in (*SCORES, "semi2i_epochs")},
                     "error": str(result.error).splitlines()[0][:200] if result.error else ""})
        df = result.metrics_dataframe
        if df is not None and len(df):
            for rec in df.to_dict("records"):
                rungs.append({"trial": trial_id, "rung": rec.get("rung"), **config,
                              **{k: rec.get(k) for k in (*SCORES, "rung_s")}})
    sign = -1 if sweep.mode == "max" else 1

    def key(row: dict) -> tuple:
        value = row.get(sweep.metric)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (missing, sign * value if not missing else 0.0, str(row["trial"]))  # ties: trial order

    rows.sort(key=key)
    rungs.sort(key=lambda r: (str(r["trial"]), r["rung"] or 0))
    return rows, rungs


def pick_best(sweep: Sweep, rows: list[dict]) -> dict | None:
    """The best trial among those that ran every rung (the full schedule), else the best of all."""
    scored = [r for r in rows if _finite(r.get(sweep.metric))]
    full = [r for r in scored if r["rungs"] >= sweep.n_rungs]
    return (full or scored or [None])[0]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def tracking(reports: list[dict], key: str = "proxy") -> dict | None:
    """Spearman rank correlation between mIoU and a label-free objective over ``reports`` (``proxy``
    negated: lower is better; ``label_free`` as is), 1 = it ranks them exactly as the mIoU does; None
    without enough labelled points. Over every rung report it asks whether the objective steers ASHA
    right; over the trials (each one's last report, the rows of results.csv) whether it ranks what the
    sweep hands the user right."""
    pairs = [(r["miou"], r[key]) for r in reports if _finite(r.get("miou")) and _finite(r.get(key))]
    if len(pairs) < 3:
        return None
    miou, score = np.array(pairs).T
    if miou.std() == 0 or score.std() == 0:
        return None
    from scipy.stats import spearmanr

    return {"spearman": float(spearmanr(miou, -score if key == "proxy" else score).statistic), "points": len(pairs)}


def best_config(sweep: Sweep, best: dict) -> dict:
    """The adapt config with the winner's λ / decay epoch under overrides.semi2i (other overrides kept)."""
    from semi2i.config import merge_overrides

    raw = {k: v for k, v in sweep.cfg.raw.items() if k != "tune"}
    winners = {k: (int(best[k]) if k == "decay_epoch" else float(best[k])) for k in SEARCH_KEYS if best.get(k) is not None}
    overrides = merge_overrides(raw.get("overrides") or {}, {"semi2i": winners})
    out = {**raw, "name": f"{sweep.cfg.name}-tuned", "profile": sweep.cfg.profile.name, "seed": sweep.cfg.seed,
           "overrides": overrides}
    return out


def write_outputs(sweep: Sweep, rows: list[dict], rungs: list[dict], *, baseline: dict | None = None) -> dict:
    run_dir = sweep.run_dir
    columns = [*RESULT_COLUMNS, "error"]  # results.md's columns (same order), plus the error message
    _write_csv(run_dir / "results.csv", [{"rank": i + 1, **r} for i, r in enumerate(rows)], columns)
    _write_csv(run_dir / "rungs.csv", rungs, ["trial", "rung", *SEARCH_KEYS, *SCORES, "rung_s"])
    best = pick_best(sweep, rows)
    tracked = {key: tracking(rungs, key) for key in ("label_free", "proxy")}
    by_trial = {key: tracking(rows, key) for key in ("label_free", "proxy")}
    summary = {"metric": sweep.metric, "mode": sweep.mode, "rungs": sweep.n_rungs, "trials": len(rows),
               "settings": dataclasses.asdict(sweep.settings), "concurrency": sweep.concurrency,
               "best": best, "proxy_tracking": tracked["proxy"], "label_free_tracking": tracked["label_free"],
               "proxy_trial_tracking": by_trial["proxy"], "label_free_trial_tracking": by_trial["label_free"],
               "baseline": baseline or {},
               "results": str(run_dir / "results.md"), "best_config": None}
    if best is not None:
        path = run_dir / "best.yaml"
        header = (f"# jobs/tune.py winner: trial {best['trial']}, {sweep.metric} = {best[sweep.metric]:.4g} "
                  f"({sweep.mode}) after {best['rungs']} of {sweep.n_rungs} rungs.\n"
                  f"# Run it: python jobs/adapt.py --config {path}\n")
        atomic_text(path, header + yaml.safe_dump(best_config(sweep, best), sort_keys=False))
        load_adapt_config(path)  # what we hand out must load
        summary["best_config"] = str(path)
    atomic_text(run_dir / "results.md", results_markdown(sweep, rows, best, tracked, baseline or {}, by_trial))
    atomic_text(run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def results_markdown(sweep: Sweep, rows: list[dict], best: dict | None, tracked: dict[str, dict | None], baseline: dict,
                     by_trial: dict[str, dict | None] | None = None) -> str:
    s = sweep.settings
    lines = [f"# SemI2I sweep: {sweep.cfg.name} ({sweep.cfg.profile.name} profile)", "",
             f"Objective: **{sweep.metric}** ({sweep.mode}imize) after each rung of {s.epochs_per_rung} SemI2I epoch(s); "
             f"ASHA (grace {s.grace_period}, reduction factor {s.reduction_factor:g}, {sweep.n_rungs} rung(s)). "
             "label-free = −the domain distance of the rung's U-net (higher is better), proxy = style distance + "
             "structure loss (lower is better); neither sees target labels (see README, Tuning)."]
    if baseline.get("source_only_miou") is not None:
        lines.append(f"\nSource-only U-net on the target: mIoU {baseline['source_only_miou']:.2f}.")
    for key, formula in (("label_free", "label-free"), ("proxy", "−proxy")):
        if found := tracked.get(key):
            lines.append(f"\n{formula.strip('−').capitalize()} vs mIoU over {found['points']} rung reports: Spearman "
                         f"ρ(mIoU, {formula}) = {found['spearman']:.2f} (1: it ranks the rungs like the mIoU).")
        if found := (by_trial or {}).get(key):
            lines.append(f"Over the {found['points']} trials (each one's last report, the table below): "
                         f"ρ(mIoU, {formula}) = {found['spearman']:.2f}.")
    header = list(RESULT_COLUMNS.values())
    lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for i, r in enumerate(rows):
        row = {**r, "rank": i + 1}
        if best is not None and r["trial"] == best["trial"]:
            row["trial"] = f"{r['trial']} **(best)**"
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in RESULT_COLUMNS) + " |")
    if best is not None:
        path = sweep.run_dir / "best.yaml"
        lines += ["", f"Best config: `{path}` (`python jobs/adapt.py --config {path}`)."]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    """A results.md cell: text as is, numbers as :func:`_fmt` writes them."""
    return value if isinstance(value, str) else _fmt(value)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4g}"


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_json(path: Path, data: dict) -> None:
    atomic_text(path, json.dumps(data, indent=1))
