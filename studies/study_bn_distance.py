"""Study: a label-free score from batch-norm statistics, ranked against target mIoU (the Tune issue's test).

A U-net's BatchNorm layers hold the feature statistics of the imagery it was trained (or fine-tuned) on. Run
on the target, each layer sees the target's statistics instead. The further apart the two, the less the
target looks like what the network learnt on: the AdaBN study (``study_adabn.py``) showed that on the Dubai
main pair most of source-only's failure is there, and that the oracle's statistics are already the target's.
The score, fixed before any result was seen: per BatchNorm layer, the mean over channels of the 2-Wasserstein
distance between the two 1-D Gaussians (running mean and variance against the target's, estimated as AdaBN
does), in units of the layer's running variance; averaged over layers, negated (higher = better):

    d = mean_layers mean_channels [(mu_t - mu_r)^2 + (sqrt(v_t) - sqrt(v_r))^2] / (v_r + 1e-5)

For each finished run, every method's U-net but the oracle's gets the score; ρ is Spearman's over all the runs'
points of a pair against the reports' mIoU, beside the shipped label-free score (``methods[m]["label_free"]``),
and the pick loss is, per run, the best method's mIoU minus the picked one's.

    python studies/study_bn_distance.py runs/s43/bright-to-sensor-auto-s{0,1,2} --jsonl FILE
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from semi2i.checkpoints import load_checkpoint
from semi2i.data.store import CityStore

from study_adabn import CHECKPOINTS, emit, target_statistics_model  # the sibling study (this script's folder)


def bn_distance(state: dict, store: CityStore, batch: int, seed: int = 0) -> float:
    """The score's d (see the module docstring) of one U-net checkpoint's state on ``store``."""
    target = target_statistics_model(state, store, batch, seed)
    per_layer = []
    for name, module in target.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            mu_r, v_r = state["model"][f"{name}.running_mean"], state["model"][f"{name}.running_var"]
            mu_t, v_t = module.running_mean, module.running_var
            w2 = (mu_t - mu_r) ** 2 + (v_t.clamp_min(0).sqrt() - v_r.clamp_min(0).sqrt()) ** 2
            per_layer.append(float((w2 / (v_r + 1e-5)).mean()))
    return float(np.mean(per_layer))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--jsonl", type=Path)
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())
        store = CityStore(run / "stores" / "target.zarr")
        for method, name in CHECKPOINTS.items():
            if method == "target_oracle" or not (run / name).exists() or method not in report["methods"]:
                continue
            d = bn_distance(load_checkpoint(run / name), store, args.batch)
            m = report["methods"][method]
            row = {"run": str(run), "method": method, "miou": m.get("miou"), "label_free": m.get("label_free"),
                   "bn_score": -d}
            emit(row, rows, args.jsonl)
    print("\n| score | points | Spearman ρ with mIoU | pick loss, mean | pick loss, worst |\n|---|---|---|---|---|")
    for key in ("bn_score", "label_free"):
        pts = [r for r in rows if r[key] is not None and r["miou"] is not None]
        rho = spearmanr([r[key] for r in pts], [r["miou"] for r in pts]).statistic
        losses = []
        for run in {r["run"] for r in pts}:
            mine = [r for r in pts if r["run"] == run]
            losses.append(max(r["miou"] for r in mine) - max(mine, key=lambda r: r[key])["miou"])
        print(f"| {key} | {len(pts)} | {rho:.2f} | {np.mean(losses):.2f} | {max(losses):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
