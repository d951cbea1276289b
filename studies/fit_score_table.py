"""The table of docs/adaptation-study.md's fit study: each label-free candidate's Spearman ρ with target mIoU and
its pick loss, per run, from the rows of ``study_fit_score.py`` (JSON lines; one row per run and method).

Candidates (higher = better; none reads a target label):
- ``distance``: the shipped score, −(domain distance) (``label_free``);
- ``fit_miou``, ``fit_bacc``: the method's U-net on its own training imagery (mIoU, balanced accuracy);
- ``bound``: −distance − (1 − fit balanced accuracy), the two measurable terms of Ben-David et al.'s bound added
  as they are (their units differ: a weight of 1 is an assumption, not a measurement);
- ``borda``: the mean of the two terms' ranks inside the run (no weight to choose: only their orders count).

Pick loss = the run's best mIoU − the mIoU of the method the candidate rates highest.

    python studies/fit_score_table.py docs/results/fit-score-*.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

CANDIDATES = ("distance", "fit_miou", "fit_bacc", "bound", "borda")


def candidate_scores(rows: list[dict]) -> dict[str, np.ndarray]:
    """{candidate: one score per row} for the rows of one run."""
    distance = np.array([r["label_free"] for r in rows], float)
    bacc = np.array([r["fit_balanced_accuracy"] for r in rows], float)
    return {"distance": distance, "fit_miou": np.array([r["fit_miou"] for r in rows], float), "fit_bacc": bacc,
            "bound": distance - (1 - bacc), "borda": (rankdata(distance) + rankdata(bacc)) / 2}


def pick_of(miou: np.ndarray, score: np.ndarray) -> int:
    """The index a score picks: its highest; a tie counts against it (the worst mIoU of the tied)."""
    top = np.flatnonzero(score == score.max())
    return int(top[np.argmin(miou[top])])


def run_table(rows: list[dict]) -> dict[str, dict]:
    """{candidate: {"rho", "pick", "loss"}} for one run's rows."""
    miou = np.array([r["miou"] for r in rows], float)
    out = {}
    for name, score in candidate_scores(rows).items():
        pick = pick_of(miou, score)
        out[name] = {"rho": float(spearmanr(miou, score).statistic), "pick": rows[pick]["method"],
                     "loss": float(miou.max() - miou[pick])}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="+", type=Path, help="study_fit_score.py rows (JSON lines)")
    args = p.parse_args()
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in args.rows:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[f"{path.name}: {row['run']}"].append(row)
    print("| run | points | " + " | ".join(f"ρ {c} | pick loss {c}" for c in CANDIDATES) + " |")
    print("|---|---|" + "---|---|" * len(CANDIDATES))
    for run, rows in runs.items():
        table = run_table(rows)
        cells = " | ".join(f"{table[c]['rho']:.2f} | {table[c]['loss']:.2f} ({table[c]['pick']})" for c in CANDIDATES)
        print(f"| {run} | {len(rows)} | {cells} |")


if __name__ == "__main__":
    main()
