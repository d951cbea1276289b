"""Study: reverse validation as a label-free score of adapted models (Zhong et al., ECML 2010; Ganin et
al., JMLR 2016, Sec. 5.1.2).

A research harness, not the product's path. For every candidate's class maps of the target (what
``studies/study_budget.py --keep-maps`` left in ``maps/``), train a fresh U-net on the *target* images
with those maps as labels, then score it on the labelled *source*, whose images are first brought into
the target's radiometry by histogram matching (one fixed bridge, the same for every candidate). A
candidate that maps the target right hands the reverse model right labels, so the reverse model maps the
source right; a candidate that misses a class (the source model's bias) hands over no example of it.
Unlike agreement, no candidate votes on another: the score of one map does not depend on which other
methods ran. The reverse U-net's seed and patches are the same for every candidate.

    python studies/study_reverse.py runs/ablation --data ../shared/data [--steps 300] [--markdown F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

# studies/study_budget.py: Python puts a script's own folder first on its import path
from study_budget import CLASSES, PAIRS, band_stats, load_domain, score, train_unet
from study_selection import NAME, read_points

from semi2i.config import load_profile
from semi2i.models.unet import UNet
from semi2i.stylizers.histogram import HistogramMatchingStylizer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="the reverse U-net's seed (the same for every candidate)")
    p.add_argument("--only-seed", type=int, default=None, help="score only the candidates of this study seed")
    p.add_argument("--markdown", default=None)
    args = p.parse_args()
    folder = Path(args.folder)
    miou = read_points(folder)
    ucfg = load_profile("quick").unet
    cache = folder / "reverse.jsonl"
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            done[(r["pair"], r["seed"], r["method"], r["steps"], r["reverse_seed"])] = r
    domains = {}
    for f in sorted((folder / "maps").glob("*.npz")):
        m = NAME.match(f.name)
        if not m or m["method"] == "target_oracle" or (m["pair"], int(m["seed"]), m["method"]) not in miou:
            continue
        pair, seed, method = m["pair"], int(m["seed"]), m["method"]
        if args.only_seed is not None and seed != args.only_seed:
            continue
        key = (pair, seed, method, args.steps, args.seed)
        if key in done:
            continue
        if pair not in domains:
            source, target = load_domain(Path(args.data), PAIRS[pair][0]), load_domain(Path(args.data), PAIRS[pair][1])
            s_stats, t_stats = band_stats(source), band_stats(target)
            bridge = HistogramMatchingStylizer(s_stats, t_stats)
            bridged = [(np.clip(np.rint(bridge.stylize(im)), 0, 255).astype(np.uint8), lab) for im, lab in source]
            domains[pair] = (target, t_stats, bridged)
        target, t_stats, bridged = domains[pair]
        with np.load(f) as z:
            maps = [z[k] for k in sorted((k for k in z.files if k.startswith("arr_")), key=lambda k: int(k[4:]))]
        pseudo = [(im, lab) for (im, _), lab in zip(target, maps)]
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        model = UNet(3, len(CLASSES), ucfg.base_width, ucfg.depth)
        train_unet(model, pseudo, t_stats, args.steps, ucfg, args.seed, torch.device("cpu"))
        s = score(model, bridged, t_stats, ucfg.patch_size, 16, torch.device("cpu"))
        r = {"pair": pair, "seed": seed, "method": method, "steps": args.steps, "reverse_seed": args.seed,
             "miou": miou[(pair, seed, method)], "reverse": round(s["miou"], 2),
             "reverse_iou": {k: round(v, 1) for k, v in s["iou"].items()}, "wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(r), flush=True)
        with cache.open("a") as out:
            out.write(json.dumps(r) + "\n")
        done[key] = r
    rows = [r for k, r in done.items() if k[3] == args.steps and k[4] == args.seed]
    lines = ["| pair | points | ρ reverse | loss reverse |", "|---|---|---|---|"]
    for pair in sorted({r["pair"] for r in rows}):
        pts = [r for r in rows if r["pair"] == pair]
        rho = float(spearmanr([r["reverse"] for r in pts], [r["miou"] for r in pts]).statistic)
        loss = np.mean([max(r["miou"] for r in g) - max(g, key=lambda r: r["reverse"])["miou"]
                        for g in ([r for r in pts if r["seed"] == s] for s in sorted({r["seed"] for r in pts}))])
        lines.append(f"| {pair} | {len(pts)} | {rho:.2f} | {loss:.1f} |")
    lines += ["", "| pair | seed | method | mIoU | reverse mIoU |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["pair"], r["seed"], -r["miou"])):
        lines.append(f"| {r['pair']} | {r['seed']} | {r['method']} | {r['miou']:.1f} | {r['reverse']:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
