"""Study: do the label-free scores of :mod:`semi2i.selection` rank adapted models like target mIoU does?

A research harness, not the product's path. It reads what ``studies/study_budget.py --keep-maps`` left in
a folder (``maps/<pair>_s<seed>_<method>.npz``: every method's class maps of the target, and
``results.jsonl``: their mIoU) and, per pair, scores every candidate without target labels against the
other candidates of the same seed (what one adapt run would have: its methods and SemI2I variants),
then reports each score's Spearman ρ with mIoU and what picking the best by the score loses against
picking by mIoU. The target oracle is never a candidate (it is trained on the target's labels). Rows made
with ``--domain-distance`` also bring the scores of ``studies/domain_distance.py`` (each candidate alone,
``-distance``: higher = closer to the target), reported beside the agreement scores.

    python studies/study_selection.py runs/ablation --data ../shared/data [--markdown docs/table.md]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

# studies/study_budget.py: Python puts a script's own folder first on its import path
from study_budget import CLASSES, PAIRS, load_domain

from semi2i.selection import agreement_matrix, agreement_scores, class_balance, class_frequencies

SCORES = ("mean", "spectral", "class_balance", "confidence")
# (score name, study_budget key, feature level) of the domain-distance candidates
DISTANCES = (("base_mid", "distance_base", "mid"), ("base_deep", "distance_base", "deep"),
             ("own_mid", "distance_own", "mid"), ("own_deep", "distance_own", "deep"), ("pixel", "distance_base", "pixel"))
NAME = re.compile(r"(?P<pair>[a-z-]+)_s(?P<seed>\d+)_(?P<method>.+)\.npz$")


def read_points(folder: Path) -> dict[tuple[str, int, str], dict]:
    """(pair, seed, method) -> that method's row (mIoU, distances) from results.jsonl (later lines win)."""
    points = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)["r"]
        for method, m in r["methods"].items():
            points[(r["pair"], int(r["seed"]), method)] = m
    return points


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--data", required=True)
    p.add_argument("--markdown", default=None)
    args = p.parse_args()
    folder = Path(args.folder)
    points = read_points(folder)
    groups: dict[tuple[str, int], dict[str, Path]] = defaultdict(dict)
    for f in sorted((folder / "maps").glob("*.npz")):
        m = NAME.match(f.name)
        if m and m["method"] != "target_oracle" and (m["pair"], int(m["seed"]), m["method"]) in points:
            groups[(m["pair"], int(m["seed"]))][m["method"]] = f
    rows = []
    source_freq = {}
    for (pair, seed), files in sorted(groups.items()):
        if len(files) < 2:
            continue
        if pair not in source_freq:
            source_freq[pair] = class_frequencies((lab for _, lab in load_domain(Path(args.data), PAIRS[pair][0])), len(CLASSES))
        maps, confidence = {}, {}
        for method, f in files.items():
            with np.load(f) as z:
                maps[method] = [z[k] for k in sorted((k for k in z.files if k.startswith("arr_")), key=lambda k: int(k[4:]))]
                confidence[method] = float(z["confidence"].mean())
        names, matrix = agreement_matrix(maps, len(CLASSES))
        agree = agreement_scores(names, matrix)
        for method in names:
            point = points[(pair, seed, method)]
            rows.append({"pair": pair, "seed": seed, "method": method, "miou": point["miou"],
                         "mean": agree[method]["mean"], "spectral": agree[method]["spectral"],
                         "class_balance": class_balance(maps[method], source_freq[pair]),
                         "confidence": confidence[method],
                         **{name: -point[key][level] for name, key, level in DISTANCES if key in point}})
    scores_here = [s for s in SCORES + tuple(d[0] for d in DISTANCES) if rows and all(s in r for r in rows)]
    lines = ["| pair | points | " + " | ".join(f"ρ {s}" for s in scores_here) + " | "
             + " | ".join(f"loss {s}" for s in scores_here) + " |", "|---" * (2 + 2 * len(scores_here)) + "|"]
    summary = {}
    for pair in sorted({r["pair"] for r in rows}):
        pts = [r for r in rows if r["pair"] == pair]
        rho = {s: float(spearmanr([r[s] for r in pts], [r["miou"] for r in pts]).statistic) for s in scores_here}
        # picking within each seed's group (one adapt run), averaged over seeds: best by mIoU - picked
        loss = {}
        for s in scores_here:
            per_seed = []
            for seed in sorted({r["seed"] for r in pts}):
                g = [r for r in pts if r["seed"] == seed]
                per_seed.append(max(r["miou"] for r in g) - max(g, key=lambda r: r[s])["miou"])
            loss[s] = float(np.mean(per_seed))
        summary[pair] = {"points": len(pts), "rho": rho, "loss": loss}
        lines.append(f"| {pair} | {len(pts)} | " + " | ".join(f"{rho[s]:.2f}" for s in scores_here) + " | "
                     + " | ".join(f"{loss[s]:.1f}" for s in scores_here) + " |")
    detail = ["", "| pair | seed | method | mIoU | " + " | ".join(scores_here) + " |", "|---" * (4 + len(scores_here)) + "|"]
    for r in sorted(rows, key=lambda r: (r["pair"], r["seed"], -r["miou"])):
        detail.append(f"| {r['pair']} | {r['seed']} | {r['method']} | {r['miou']:.1f} | "
                      + " | ".join(f"{r[s]:.4g}" for s in scores_here) + " |")
    text = "\n".join(lines + detail)
    print(text)
    print(json.dumps(summary))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
