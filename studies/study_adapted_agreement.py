"""Agreement among the adapted fine-tunes only: does "one right map, many wrong ones" pick better than the score? (2026-12-07)

Agreement (a candidate's mean mIoU of map against map with the others) ranked the methods backwards in the first study
(docs/label-free-selection.md, "Why they fail with five candidates"): the fine-tunes that did not adapt map alike, and
where the guard maps them with the source U-net their maps are identical. This asks the question again among the
fine-tunes the guard kept (`maps_with: fine_tune`), where the label-free score is weakest: with three or more of them,
pick the one that agrees most with the others; with fewer, the score's pick stands. A third column is no score at all:
SemI2I whenever the guard kept its fine-tune (the platform's method as a prior), else the score's pick. Reads each run's published maps
(`maps/<method>/cog`, every second pixel) and its report; prints each run's picks and the mIoU each loses.

    cd studies && python study_adapted_agreement.py ../runs/s66/synthetic/*-s? ../runs/s61/main-s? ... --out rows.jsonl
    python study_adapted_agreement.py --rows ../docs/results/adapted-agreement-2026-12-07.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import rasterio

from semi2i.report_table import label_free_pick

STYLIZERS = ("histogram_matching", "gray_world", "colormapgan", "semi2i")


def published_map(run: Path, method: str, step: int = 2) -> np.ndarray:
    parts = []
    for path in sorted((run / "maps" / method / "cog").glob("*.tif")):
        with rasterio.open(path) as src:
            parts.append(src.read(1)[::step, ::step].ravel())
    return np.concatenate(parts)


def map_miou(a: np.ndarray, b: np.ndarray, classes: int) -> float:
    """mIoU of map ``a`` against map ``b`` over the classes either holds (nodata, >= classes, left out)."""
    ok = (a < classes) & (b < classes)
    counts = np.bincount(a[ok].astype(np.int64) * classes + b[ok], minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - inter
    return float((inter[union > 0] / union[union > 0]).mean())


def run_row(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    methods, guard = report["methods"], report.get("finetune_guard", {})
    candidates = ["source_only", *(m for m in STYLIZERS if m in methods)]
    adapted = [m for m in STYLIZERS if m in methods and guard.get(m, {}).get("maps_with") == "fine_tune"]
    agreement = {}
    if len(adapted) >= 3:
        maps = {m: published_map(run, m) for m in adapted}
        agreement = {m: statistics.mean(map_miou(maps[m], maps[o], len(report["classes"])) for o in adapted if o != m)
                     for m in adapted}
    score_pick = label_free_pick({m: methods[m] for m in candidates})  # the report's pick
    return {"run": "/".join(run.parts[-2:]), "pair": f"{report['source']} -> {report['target']}",
            "miou": {m: methods[m]["miou"] for m in candidates}, "adapted": adapted, "agreement": agreement,
            "score_pick": score_pick, "agreement_pick": max(agreement, key=agreement.get) if agreement else score_pick,
            "semi2i_pick": "semi2i" if "semi2i" in adapted else score_pick}


def table(rows: list[dict]) -> str:
    lines = ["| run | adapted | score's pick (loss) | agreement's pick (loss) | SemI2I when kept (loss) |", "|---|---|---|---|---|"]
    losses = {"score_pick": [], "agreement_pick": [], "semi2i_pick": []}
    for row in rows:
        best = max(row["miou"].values())
        cells = []
        for key in losses:
            losses[key].append(loss := best - row["miou"][row[key]])
            cells.append(f"{row[key]} ({loss:.2f})")
        lines.append(f"| {row['run']} | {len(row['adapted'])} | {' | '.join(cells)} |")
    summary = " | ".join(f"{statistics.mean(v):.2f} / {max(v):.2f}" for v in losses.values())
    lines.append(f"| mean / worst over {len(rows)} runs | | {summary} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="append each run's row to this JSON-lines file")
    parser.add_argument("--rows", nargs="*", type=Path, default=[], help="rows written before: tabulate them")
    args = parser.parse_args()
    from finished_runs import append_row, read_rows  # here: the tests import the tables' functions without studies/ on the path
    rows = read_rows(args.rows)
    for run in args.runs:
        if not (run / "report.json").is_file():
            continue
        rows.append(row := run_row(run))
        append_row(args.out, row)
    print(table(rows))


if __name__ == "__main__":
    main()
