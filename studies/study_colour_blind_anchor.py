"""A colour-blind reference map: does agreement with it see the class swaps that the label-free score misses? (2026-12-07)

The score cannot order fine-tunes that all adapted (docs/label-free-selection.md, "Pairs from the project's own
generator"): a colour transfer can paint one class in another's colours, and the fine-tune then learns the swap
while the target looks like its training imagery on the whole. A swap made through colour cannot fool a model that
is not allowed to use colour. So: train a U-net on the source with a random hue rotation per patch
(:mod:`semi2i.colour_blind`, the product's code since 2026-12-07), map the target with it, and score each candidate by
the mIoU of its published map against this reference map; pick the highest.

Reads a finished run folder (stores, published maps, report, resolved config) and runs the product's piece on it with
the run's seed and U-net settings (the reference U-net goes to ``--scratch``); writes one JSON row per run.

    cd studies && python study_colour_blind_anchor.py ../runs/s66/synthetic/a-to-c-s2 --out rows.jsonl
    python study_colour_blind_anchor.py --rows rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml
from scipy.stats import spearmanr

CANDIDATES = ("source_only", "histogram_matching", "gray_world", "colormapgan", "semi2i")


def run_row(run: Path, scratch: Path, steps: int) -> dict:
    """The product's piece (:func:`semi2i.colour_blind.measure`) on a finished run folder, with the run's seed and
    U-net settings; the reference U-net goes to ``scratch``, not into the run folder."""
    from semi2i.colour_blind import measure
    from semi2i.report_table import label_free_pick

    started = time.perf_counter()
    report = json.loads((run / "report.json").read_text())
    unet = yaml.safe_load((run / "config.resolved.yaml").read_text())["resolved_profile"]["unet"]
    methods = {m: report["methods"][m] for m in CANDIDATES if m in report["methods"]}
    name = "/".join(run.parts[-2:])
    result = measure(scratch / name / "unet.pt", str(run / "stores" / "target.zarr"),
                     {m: str(run / "maps" / m) for m in methods}, str(run / "stores" / "source.zarr"),
                     {k: unet[k] for k in ("patch_size", "base_width", "depth", "batch_size", "lr")}, steps, report["seed"])
    agreement = {m: v["agreement"] for m, v in result["methods"].items()}
    return {"run": name, "pair": f"{report['source']} -> {report['target']}", "seed": report["seed"], "steps": steps,
            "reference_miou": result.get("reference_miou"), "seconds": round(time.perf_counter() - started, 1),
            "miou": {m: v["miou"] for m, v in methods.items()}, "label_free": {m: v["label_free"] for m, v in methods.items()},
            "agreement": agreement, "score_pick": label_free_pick({m: {"label_free": v["label_free"]} for m, v in methods.items()}),
            "anchor_pick": label_free_pick({m: {} for m in methods}, agreement)}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's ρ with tied ranks averaged (methods the guard maps with the source U-net share its map); nan when
    one side is constant."""
    return float(spearmanr(a, b).statistic) if len(set(a)) > 1 and len(set(b)) > 1 else float("nan")


def picks(row: dict) -> dict[str, str]:
    """The two picks of a row, by the product's rule (:func:`semi2i.report_table.label_free_pick`): the label-free
    score's and the reference agreement's."""
    from semi2i.report_table import label_free_pick

    return {"score_pick": label_free_pick({m: {"label_free": v} for m, v in row["label_free"].items()}),
            "anchor_pick": label_free_pick({m: {} for m in row["miou"]}, row["agreement"])}


def table(rows: list[dict]) -> str:
    lines = ["| run | reference mIoU | ρ(agreement, mIoU) | score's pick (loss) | reference's pick (loss) |",
             "|---|---|---|---|---|"]
    losses = {"score_pick": [], "anchor_pick": []}
    for row in rows:
        best, picked = max(row["miou"].values()), picks(row)
        names = list(row["miou"])
        rho = spearman([row["agreement"][n] for n in names], [row["miou"][n] for n in names])
        cells = []
        for key in losses:
            losses[key].append(loss := best - row["miou"][picked[key]])
            cells.append(f"{picked[key]} ({loss:.2f})")
        lines.append(f"| {row['run']} | {row['reference_miou']:.2f} | {rho:.2f} | {' | '.join(cells)} |")
    summary = " | ".join(f"{statistics.mean(v):.2f} / {max(v):.2f}" for v in losses.values())
    lines.append(f"| mean / worst over {len(rows)} runs | | | {summary} |")
    return "\n".join(lines) + "\n\n" + pair_table(rows)


def pair_table(rows: list[dict]) -> str:
    """Per pair: the reference's mIoU, ρ between agreement and mIoU over the pair's report points (all seeds), and
    each pick's mean / worst loss."""
    lines = ["| pair | runs | reference mIoU | ρ agreement (points) | ρ score | score's pick: loss mean / worst | "
             "reference's pick: loss mean / worst |", "|---|---|---|---|---|---|---|"]
    for pair in dict.fromkeys(row["pair"] for row in rows):
        group = [row for row in rows if row["pair"] == pair]
        points = [(row["agreement"][m], row["label_free"][m], row["miou"][m]) for row in group for m in row["miou"]]
        agree, score, miou = (list(v) for v in zip(*points))
        cells = []
        for key in ("score_pick", "anchor_pick"):
            loss = [max(row["miou"].values()) - row["miou"][picks(row)[key]] for row in group]
            cells.append(f"{statistics.mean(loss):.2f} / {max(loss):.2f}")
        lines.append(f"| {pair} | {len(group)} | {statistics.mean(r['reference_miou'] for r in group):.2f} | "
                     f"{spearman(agree, miou):.2f} ({len(points)}) | {spearman(score, miou):.2f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=400, help="the reference's steps (the quick profile's reference_steps)")
    parser.add_argument("--scratch", type=Path, default=Path("../runs/colour-blind"), help="where the reference U-nets go")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rows", nargs="*", type=Path, default=[])
    args = parser.parse_args()
    from finished_runs import append_row, read_rows

    torch.set_num_threads(2)
    rows = read_rows(args.rows)
    for run in args.runs:
        rows.append(row := run_row(run, args.scratch, args.steps))
        append_row(args.out, row)
        print(json.dumps({k: row[k] for k in ("run", "reference_miou", "seconds", "score_pick", "anchor_pick")}), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
