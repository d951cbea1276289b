"""Tabulate `study_unet_budget.py` results against the runs they retrained: per pair and method, each seed's
mIoU in the run's own report and with the study's U-net settings, the mean change and both spreads (issue 18's
bars are stated in means and spreads). Every study row is paired with its run's report row, so the stylized
sources (the GANs) are the same on both sides and only the U-nets differ.

    python studies/paired_unet_table.py runs/s52/cb05-main/results.jsonl runs/s52/cb05-reverse/results.jsonl ...
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

METHODS = ["source_only", "colormapgan", "semi2i", "target_oracle"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path)
    args = p.parse_args()
    table: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for path in args.results:
        for row in map(json.loads, path.read_text().splitlines()):
            report = json.loads((Path(row["run"]) / "report.json").read_text())
            pair = f"{report['source']} -> {report['target']}"
            table[pair, row["method"]].append((row["seed"], report["methods"][row["method"]]["miou"], row["miou"]))
    print("| pair | method | seeds | run's U-nets, per seed | study's U-nets, per seed | mean before → after (Δ) | spread before → after |")
    print("|---|---|---|---|---|---|---|")
    for pair in sorted({k[0] for k in table}):
        for method in METHODS:
            rows = sorted(table.get((pair, method), []))
            if not rows:
                continue
            before, after = [r[1] for r in rows], [r[2] for r in rows]
            mb, ma = statistics.mean(before), statistics.mean(after)
            print(f"| {pair} | {method} | {' '.join(str(r[0]) for r in rows)} | {' / '.join(f'{v:.2f}' for v in before)} | "
                  f"{' / '.join(f'{v:.2f}' for v in after)} | {mb:.2f} → {ma:.2f} ({ma - mb:+.2f}) | "
                  f"{max(before) - min(before):.2f} → {max(after) - min(after):.2f} |")


if __name__ == "__main__":
    main()
