"""Tabulate `jobs/adapt.py` run folders: one row per (run, method) from each `report.json`, a per-seed table per
setting, the means and spreads the SemI2I issue's bar is stated in, and how well the report's label-free score
ranks the methods (Spearman ρ with mIoU, and the mIoU lost by picking with it).

    python studies/collect_reports.py RUN [RUN ...] --setting NAME=GLOB ... [--jsonl FILE]
    python studies/collect_reports.py --rows docs/results/A.jsonl docs/results/B.jsonl   # committed rows, re-tabulated

Rows written with `--jsonl` are the committed record of runs whose folders are gone (run folders are not kept in
git): `--rows` reads them back, so a three-seed table can be rebuilt from runs of different sessions. Each table ends
with the issues' bars, met or not: the SemI2I issue's (mean ≥ ColorMapGAN's + 3, worst seed above the best simple
baseline seed, spread ≤ 6; on the mild pair, mean ≥ source-only's) and the label-free issue's (ρ ≥ 0.6, worst pick loss ≤ 3).

A run's pair is its report's "source -> target"; its setting is the first `--setting` whose glob matches the run
folder's name (e.g. `--setting step='*-step-*' --setting epoch='*-epoch-*'`). The target oracle is left out of
the ρ and the picks (it is an upper bound trained on target labels, not a candidate a user could choose).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy.stats import spearmanr

COLUMNS = ["source_only", "histogram_matching", "gray_world", "colormapgan", "semi2i", "target_oracle"]


def load_rows(runs: list[Path], settings: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for run in runs:
        if not (run / "report.json").is_file():
            print(f"# {run}: no report.json (unfinished run), left out", file=sys.stderr)
            continue
        report = json.loads((run / "report.json").read_text())
        setting = next((name for name, pattern in settings if fnmatch.fnmatch(run.name, pattern)), "")
        for method, m in report["methods"].items():
            if "miou" not in m:
                continue
            rows.append({"run": str(run), "pair": f"{report['source']} -> {report['target']}", "setting": setting,
                         "seed": report.get("seed", 0), "method": method, "miou": round(m["miou"], 2),
                         "label_free": m.get("label_free"), "tone_order": m.get("tone_order"),
                         "iou": {c: round(v, 2) for c, v in m.get("iou", {}).items()}})
    return rows


def read_rows(files: list[Path]) -> list[dict]:
    """Rows from `--jsonl` files; a (run, method) met twice is refused: the same run would count twice."""
    rows, seen = [], {}
    for file in files:
        for line in file.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row["run"], row["method"])
            if key in seen:
                raise SystemExit(f"{file}: run {row['run']} method {row['method']} is also in {seen[key]}")
            seen[key] = file
            rows.append(row)
    return rows


def _verdict(met: bool, have: int, need: int, unit: str) -> str:
    """A bar is met only on the evidence the issue asks for (3 seeds, 12 points); short of it, say so."""
    if have < need:
        return f"{'holds' if met else 'fails'} on {have} {unit}, the bar needs {need}"
    return "met" if met else "not met"


def seed_tables(rows: list[dict]) -> str:
    out = []
    groups = defaultdict(list)
    for r in rows:
        groups[(r["pair"], r["setting"])].append(r)
    for (pair, setting), group in sorted(groups.items()):
        by_seed = defaultdict(dict)
        for r in group:
            by_seed[r["seed"]][r["method"]] = r
        cols = [c for c in COLUMNS if any(c in m for m in by_seed.values())]
        out += [f"### {pair}, setting {setting or '-'}", "",
                "| seed | " + " | ".join(cols) + " | SemI2I tone order |", "|---" * (len(cols) + 2) + "|"]
        for seed, methods in sorted(by_seed.items()):
            tone = methods.get("semi2i", {}).get("tone_order")
            out.append(f"| {seed} | " + " | ".join(f"{methods[c]['miou']:.2f}" if c in methods else "-" for c in cols)
                       + (f" | {tone:.2f} |" if tone is not None else " | - |"))
        means = []
        for c in cols:
            values = [m[c]["miou"] for m in by_seed.values() if c in m]
            means.append(f"{statistics.mean(values):.2f} ({max(values) - min(values):.2f})")
        out += ["| mean (spread) | " + " | ".join(means) + " | |", ""]
        semi2i = [m["semi2i"]["miou"] for m in by_seed.values() if "semi2i" in m]
        cmg = [m["colormapgan"]["miou"] for m in by_seed.values() if "colormapgan" in m]
        simple = [m[c]["miou"] for m in by_seed.values() for c in ("source_only", "histogram_matching", "gray_world")
                  if c in m]
        if semi2i and cmg and simple:
            lead, margin, spread = (statistics.mean(semi2i) - statistics.mean(cmg), min(semi2i) - max(simple),
                                    max(semi2i) - min(semi2i))
            n = len(semi2i)
            out += [f"SemI2I − ColorMapGAN (means): {lead:+.2f} ({_verdict(lead >= 3, n, 3, 'seeds')}); SemI2I's worst "
                    f"seed − best simple baseline seed: {margin:+.2f} ({_verdict(margin > 0, n, 3, 'seeds')}); SemI2I "
                    f"spread {spread:.2f} ({_verdict(spread <= 6, n, 3, 'seeds')})"]
            source = [m["source_only"]["miou"] for m in by_seed.values() if "source_only" in m]
            if source:  # the bar of a pair whose cities are close (the mild pair): do no harm on average
                gain = statistics.mean(semi2i) - statistics.mean(source)
                out += [f"SemI2I − source-only (means; the mild pair's bar): {gain:+.2f} "
                        f"({_verdict(gain >= 0, n, 3, 'seeds')})"]
            out += [""]
    return "\n".join(out)


def label_free_ranking(rows: list[dict]) -> str:
    """ρ(label_free, mIoU) per pair and setting over every (run, method) point, and the per-run pick loss (per
    setting: a `--reuse-from` run shares its baselines with the run it reused, which would count them twice)."""
    out = ["### label-free score against mIoU (oracle excluded)", "",
           "| pair | setting | points | runs | Spearman ρ | mean pick loss | worst pick loss | ρ ≥ 0.6, worst ≤ 3 |",
           "|---|---|---|---|---|---|---|---|"]
    by_pair = defaultdict(list)
    for r in rows:
        if r["method"] != "target_oracle" and r["label_free"] is not None:
            by_pair[(r["pair"], r["setting"])].append(r)
    for (pair, setting), points in sorted(by_pair.items()):
        rho = spearmanr([p["label_free"] for p in points], [p["miou"] for p in points]).statistic
        losses = []
        for run in sorted({p["run"] for p in points}):
            cands = [p for p in points if p["run"] == run]
            picked = max(cands, key=lambda p: p["label_free"])
            losses.append(max(p["miou"] for p in cands) - picked["miou"])
        out.append(f"| {pair} | {setting or '-'} | {len(points)} | {len(losses)} | {rho:.2f} | {statistics.mean(losses):.2f} | "
                   f"{max(losses):.2f} | {_verdict(rho >= 0.6 and max(losses) <= 3, len(points), 12, 'points')} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--rows", nargs="+", type=Path, default=[], help="rows written by --jsonl, read back")
    parser.add_argument("--setting", action="append", default=[], help="NAME=GLOB on the run folder's name")
    parser.add_argument("--jsonl", type=Path, help="write one row per (run, method) here")
    args = parser.parse_args()
    settings = [tuple(s.split("=", 1)) for s in args.setting]
    if not args.runs and not args.rows:
        parser.error("give run folders, --rows files, or both")
    rows = read_rows(args.rows) + load_rows(args.runs, settings)
    if args.jsonl:
        args.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(seed_tables(rows))
    print(label_free_ranking(rows))


if __name__ == "__main__":
    main()
