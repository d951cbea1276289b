"""How well the label-free score picks among SemI2I seeds of one setting, from the committed adapt rows.

    python studies/seed_pick.py [docs/results/*.jsonl]

Each group is the SemI2I rows of one results file, pair and setting, one per run folder (rows without a pair,
i.e. studies that recomputed the score, are left out; a run folder counts once, in the first file that holds
it). For each group with two seeds or more: the seed with the highest ``label_free`` (what a user without
target labels would keep), the best and the mean mIoU, and how many pairs of seeds the score orders as mIoU
does. Why: ``semi2i.seeds`` chooses among K generators without labels, and this says what a choice by the
label-free score would have bought on the runs already made (docs/label-free-selection.md).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
from collections import defaultdict


def groups(paths: list[str]) -> dict[tuple[str, str, str], list[dict]]:
    seen: set[str] = set()
    out: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in paths:
        for line in open(path):
            row = json.loads(line)
            if row.get("method") != "semi2i" or row.get("pair") is None or row.get("label_free") is None:
                continue
            if row["run"] in seen:
                continue
            seen.add(row["run"])
            out[(path.rsplit("/", 1)[-1], row["pair"], row.get("setting") or "")].append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", default=sorted(glob.glob("docs/results/*.jsonl")))
    args = parser.parse_args()
    print("| results file | pair | setting | seeds | picked | best | mean | picked - mean | pairs ordered |")
    print("|---|---|---|---|---|---|---|---|---|")
    gains, ordered, total = [], 0, 0
    for (name, pair, setting), rows in groups(args.paths).items():
        if len(rows) < 2:
            continue
        picked = max(rows, key=lambda r: r["label_free"])["miou"]
        best = max(r["miou"] for r in rows)
        mean = sum(r["miou"] for r in rows) / len(rows)
        pairs = list(itertools.combinations(rows, 2))
        agree = sum((a["miou"] - b["miou"]) * (a["label_free"] - b["label_free"]) > 0 for a, b in pairs)
        gains.append(picked - mean)
        ordered, total = ordered + agree, total + len(pairs)
        print(f"| {name} | {pair} | {setting} | {len(rows)} | {picked:.2f} | {best:.2f} | {mean:.2f} | "
              f"{picked - mean:+.2f} | {agree}/{len(pairs)} |")
    if gains:
        print(f"\n{len(gains)} groups: picked - mean {sum(gains) / len(gains):+.2f} on average; "
              f"{ordered}/{total} pairs of seeds ordered as their mIoU")


if __name__ == "__main__":
    main()
