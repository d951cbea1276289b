"""Would averaging the guard-kept fine-tunes beat the label-free pick? (Issue 19, 2026-12-07.)

The product maps with one model: the method with the best label-free score among source-only and the fine-tunes the
guard kept (:mod:`semi2i.finetune_guard`). Where the score cannot separate close candidates (dark -> sensor-D: the
pick 3.10 below the best in one seed), the usual answer to a choice one cannot make is not to make it: average the
candidates' class probabilities. This maps each run's target with every fine-tune (kept or set aside) and the source
U-net, and with three averages of their softmax:

- ``all_kept``: every fine-tune the guard kept;
- ``top2``: the two kept fine-tunes with the best label-free scores;
- ``tied_with_best``: the best-scored kept fine-tune and every kept one whose score is not significantly below it
  (one-sided paired t-test over the score's draws, p >= 0.05).

A run whose guard kept no fine-tune has no average (it maps with the source U-net). Rows (one per run) carry each
model's mIoU on the target labels, so the table can be rebuilt without the run folders:

    cd studies && python study_ensemble.py --runs ../runs/s61/main-s0 ... --out ../runs/s65/ensemble.jsonl
    python study_ensemble.py --rows ../docs/results/ensemble-2026-12-07.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ttest_rel

from semi2i.data.store import CityStore
from semi2i.finetune_guard import UNGUARDED, maps_with
from semi2i.metrics import confusion_matrix, mean_iou
from semi2i.models.precision import autocast
from semi2i.report_table import label_free_pick
from semi2i.segment import SegmentationModel

ENSEMBLES = ("all_kept", "top2", "tied_with_best")


def candidates(run: Path) -> tuple[dict[str, Path], list[str], dict[str, list[float]]]:
    """({model: U-net checkpoint}, the fine-tunes the guard kept, {model: the score's draws}) of ``run``."""
    unets, kept, draws = {"source_only": run / "unet_source.pt"}, [], {}
    for record_path in sorted((run / "guard").glob("*.json")):
        method, record = record_path.stem, json.loads(record_path.read_text())
        if method in UNGUARDED:
            continue
        aside = run / "guard" / f"unet_{method}.pt"
        unets[method] = aside if aside.exists() else run / f"unet_{method}.pt"
        draws[method], draws["source_only"] = record["draws_fine_tuned"], record["draws_source_only"]
        if maps_with(record) == "fine_tune":
            kept.append(method)
    return unets, kept, draws


def ensembles(kept: list[str], draws: dict[str, list[float]]) -> dict[str, list[str]]:
    """The members of each average (none when the guard kept no fine-tune)."""
    if not kept:
        return {}
    score = {m: statistics.mean(draws[m]) for m in kept}
    ranked = sorted(kept, key=score.get, reverse=True)
    best = ranked[0]
    tied = [m for m in ranked if m == best or ttest_rel(draws[best], draws[m], alternative="greater").pvalue >= 0.05]
    return {"all_kept": ranked, "top2": ranked[:2], "tied_with_best": tied}


def run_row(run: Path) -> dict:
    """Every candidate's and average's mIoU on ``run``'s target (bf16 on a CPU with bf16 units, as the run mapped)."""
    unets, kept, draws = candidates(run)
    members = ensembles(kept, draws)
    target = CityStore(run / "stores" / "target.zarr")
    models = {m: SegmentationModel(path) for m, path in unets.items()}
    k = target.num_classes
    cms = {name: np.zeros((k, k), np.int64) for name in [*models, *members]}
    started = time.perf_counter()
    for raster in target.rasters:
        image, label = target.read(raster.id, "image"), target.read(raster.id, "label")
        probs = {}
        for name, model in models.items():
            with autocast("cpu", "auto"):
                logits = torch.as_tensor(np.asarray(model.logits(image), np.float32))
            probs[name] = torch.softmax(logits, 0).numpy()
            cms[name] += confusion_matrix(probs[name].argmax(0), label, k, target.ignore_index)
        for name, names in members.items():
            cms[name] += confusion_matrix(np.mean([probs[m] for m in names], 0).argmax(0), label, k, target.ignore_index)
    report = json.loads((run / "report.json").read_text())
    return {"run": str(run), "pair": f"{report['source']} -> {report['target']}", "seed": report.get("seed", 0),
            "kept": kept, "label_free": {m: round(statistics.mean(d), 6) for m, d in draws.items()},
            "ensembles": members, "miou": {name: round(mean_iou(cm), 2) for name, cm in cms.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def pick(row: dict) -> str:
    """The product's pick (:func:`semi2i.report_table.label_free_pick`) among source-only and the kept fine-tunes."""
    return label_free_pick({m: {"label_free": row["label_free"][m]} for m in ["source_only", *row["kept"]]})


def markdown(rows: list[dict]) -> str:
    lines = ["| pair | seed | kept | pick (mIoU) | best single | " + " | ".join(ENSEMBLES) + " |",
             "|---|---|---|---|---|" + "---|" * len(ENSEMBLES)]
    gains: dict[str, list[float]] = {e: [] for e in ENSEMBLES}
    for row in rows:
        chosen, miou = pick(row), row["miou"]
        singles = [m for m in miou if m not in ENSEMBLES]
        cells = []
        for e in ENSEMBLES:
            value = miou.get(e, miou[chosen])  # no average: the run maps with its pick
            gains[e].append(value - miou[chosen])
            cells.append(f"{value:.2f} ({value - miou[chosen]:+.2f})")
        lines.append(f"| {row['pair']} | {row['seed']} | {len(row['kept'])} | {chosen} ({miou[chosen]:.2f}) | "
                     f"{max(miou[m] for m in singles):.2f} | " + " | ".join(cells) + " |")
    lines.append("| mean (worst, best) change against the pick | | | | | " + " | ".join(
        f"{statistics.mean(g):+.2f} ({min(g):+.2f}, {max(g):+.2f})" for g in gains.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="finished jobs/adapt.py run folders")
    parser.add_argument("--out", type=Path, help="append one JSON row per run here")
    parser.add_argument("--rows", nargs="*", type=Path, default=[], help="rows written before: tabulate them")
    args = parser.parse_args()
    from finished_runs import append_row, read_rows  # here: the tests import the tables' functions without studies/ on the path
    rows = read_rows(args.rows)
    for run in args.runs:
        rows.append(row := run_row(run))
        append_row(args.out, row)
        print(f"{run}: {row['miou']} ({row['seconds']} s)", flush=True)
        print(f"{run}: {row['miou']} ({row['seconds']} s)", flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
