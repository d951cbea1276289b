"""One ruler for every candidate? The label-free score measured in every candidate U-net's features (2026-12-07).

The shipped score (:mod:`semi2i.domain_distance`) measures each candidate's training imagery against the target in the
candidate's *own* U-net, so two candidates are compared with two rulers. This scores every candidate (source-only and
the fine-tunes the guard kept) in every candidate's U-net, the same draws of patches for all, and takes the panel's
score of a candidate as −mean over the U-nets of log(distance) (log: each U-net's distances have their own scale). It
prints, per pair, Spearman ρ with the candidates' mIoU and the pick loss for the own-U-net score and the panel.

    cd studies && python study_panel_score.py --decisions ../docs/results/guard-decisions-zen4-2026-12-06.jsonl ... \
        --runs ../runs/s61/main-s0 ... --out ../runs/s65/panel.jsonl
    python study_panel_score.py --rows ../docs/results/panel-score-2026-12-07.jsonl
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from semi2i.data.store import CityStore
from semi2i.domain_distance import DRAWS, PATCHES, encoder_features, frechet, sample_patches
from semi2i.segment import SegmentationModel


def run_row(run: Path, decisions: list[dict]) -> dict:
    """The distance matrix (U-net × candidate imagery) of one run, its candidates' mIoU and both scores."""
    mine = [d for d in decisions if Path(d["run"]).parts[-2:] == run.parts[-2:]]
    kept = [d["method"] for d in mine if d["maps_with"] == "fine_tune"]
    miou = {"source_only": mine[0]["miou_source_only"], **{d["method"]: d["miou_fine_tuned"] for d in mine}}
    candidates = ["source_only", *kept]
    models = {m: SegmentationModel(run / ("unet_source.pt" if m == "source_only" else f"unet_{m}.pt")) for m in candidates}
    stores = {m: CityStore(run / "stores" / "source.zarr") if m == "source_only" else CityStore(run / "stylized" / m / "store.zarr")
              for m in candidates}
    target, size = CityStore(run / "stores" / "target.zarr"), models["source_only"].patch_size
    distance = {j: {i: [] for i in candidates} for j in candidates}
    for k in range(DRAWS):  # the product's places: draw k samples the imagery with seed 2k, the target with 2k + 1
        target_patches = sample_patches(target, size, PATCHES, 2 * k + 1)
        patches = {i: sample_patches(stores[i], size, PATCHES, 2 * k) for i in candidates}
        for j, model in models.items():
            deep = len(model.model.down) - 1
            on_target = encoder_features(model.model, target_patches, model.stats.zscore, (deep,))[deep]
            spread = float(np.trace(np.cov(on_target, rowvar=False)))
            for i in candidates:
                features = encoder_features(model.model, patches[i], model.stats.zscore, (deep,))[deep]
                distance[j][i].append(frechet(features, on_target) / spread)
    matrix = {j: {i: float(np.mean(v)) for i, v in row.items()} for j, row in distance.items()}
    return {"run": str(run), "pair": mine[0]["pair"], "miou": {m: miou[m] for m in candidates}, "matrix": matrix,
            "own": {i: -matrix[i][i] for i in candidates},
            "panel": {i: -float(np.mean([np.log(matrix[j][i]) for j in candidates])) for i in candidates}}


def table(rows: list[dict]) -> str:
    by_pair = defaultdict(list)
    for row in rows:
        by_pair[row["pair"]].append(row)
    lines = ["| pair | runs | candidates | ρ own U-net | ρ panel | pick loss own (mean / worst) | panel (mean / worst) |",
             "|---|---|---|---|---|---|---|"]
    for pair, group in by_pair.items():
        cells = []
        for score in ("own", "panel"):
            points = [(r["miou"][c], r[score][c]) for r in group for c in r["miou"]]
            losses = [max(r["miou"].values()) - r["miou"][max(r[score], key=r[score].get)] for r in group]
            cells.append((spearmanr(*zip(*points))[0], statistics.mean(losses), max(losses)))
        lines.append(f"| {pair} | {len(group)} | {sum(len(r['miou']) for r in group)} | {cells[0][0]:.2f} | {cells[1][0]:.2f} | "
                     f"{cells[0][1]:.2f} / {cells[0][2]:.2f} | {cells[1][1]:.2f} / {cells[1][2]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", nargs="*", type=Path, default=[], help="study_guard_decisions.py rows of the runs")
    parser.add_argument("--runs", nargs="*", type=Path, default=[])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rows", nargs="*", type=Path, default=[], help="rows written before: tabulate them")
    args = parser.parse_args()
    from finished_runs import append_row, read_rows  # here: the tests import the tables' functions without studies/ on the path
    decisions, rows = read_rows(args.decisions), read_rows(args.rows)
    for run in args.runs:
        rows.append(row := run_row(run, decisions))
        append_row(args.out, row)
    print(table(rows))


if __name__ == "__main__":
    main()
