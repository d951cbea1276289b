"""Study: does re-estimating the U-nets' batch-norm statistics on the target (AdaBN) help, and whom?

AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016) is label-free:
after training, each BatchNorm layer's running mean and variance are replaced by those of the *target*
images, so the features are normalised with the target's statistics instead of the training imagery's.
It needs no training and no labels, only one forward pass over target patches. The question is whether it
lifts the fine-tuned U-nets of `jobs/adapt.py` runs, and SemI2I's more than ColorMapGAN's (SemI2I's
stylized source is nearer the target in texture but not always in radiometry, which is what the
statistics carry).

For each finished run folder and each method's U-net (``unet_<method>.pt``), this re-estimates the
statistics on non-overlapping training-size patches of the run's target store (z-scored with the
checkpoint's own band statistics, as mapping does), maps the target with the product's ``map_region``
(the run's overlap and arithmetic) and scores it with the product's scoring; it also re-maps the run's
own checkpoint the same way, so both columns are measured by this script.

    python studies/study_adabn.py runs/s43/bright-to-sensor-auto-s0 ... --out runs/adabn --jsonl FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from semi2i.checkpoints import load_checkpoint, save_checkpoint
from semi2i.config import load_profile
from semi2i.data.normalize import BandStats
from semi2i.data.store import CityStore
from semi2i.mapping import map_region
from semi2i.models.unet import UNet
from semi2i.pipeline import score_maps

CHECKPOINTS = {"source_only": "unet_source.pt", "histogram_matching": "unet_histogram_matching.pt",
               "gray_world": "unet_gray_world.pt", "colormapgan": "unet_colormapgan.pt", "semi2i": "unet_semi2i.pt",
               "target_oracle": "unet_target_oracle.pt"}


def target_patches(store: CityStore, stats: BandStats, size: int) -> torch.Tensor:
    """Every non-overlapping ``size``² patch of the store, z-scored with ``stats`` (the checkpoint's)."""
    patches = []
    for raster in store.rasters:
        image = stats.zscore(store.read(raster.id, "image"))
        for y in range(0, raster.height - size + 1, size):
            for x in range(0, raster.width - size + 1, size):
                patches.append(image[:, y : y + size, x : x + size])
    return torch.from_numpy(np.stack(patches))


def target_statistics_model(state: dict, store: CityStore, batch: int, seed: int) -> UNet:
    """The checkpoint's U-net with every BatchNorm's running statistics re-estimated on the target (cumulative
    averages over shuffled batches of ``batch`` patches), in eval mode."""
    unet = state["unet"]
    model = UNet(int(state["in_bands"]), int(state["num_classes"]), unet["base_width"], unet["depth"])
    model.load_state_dict(state["model"])
    patches = target_patches(store, BandStats.from_attrs(state["stats"]), int(unet["patch_size"]))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    order = torch.randperm(len(patches), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for first in range(0, len(order) - batch + 1, batch):
            model(patches[order[first : first + batch]])
    return model.eval()


def adabn_checkpoint(src: Path, dest: Path, store: CityStore, batch: int, seed: int) -> None:
    """``src`` with the target's batch-norm statistics (:func:`target_statistics_model`), saved to ``dest``."""
    state = load_checkpoint(src)
    save_checkpoint(dest, {**state, "model": target_statistics_model(state, store, batch, seed).state_dict()})


def emit(row: dict, rows: list[dict], jsonl: Path | None) -> None:
    """Keep a study row, print it, and append it to ``jsonl`` as it arrives (long studies keep what they did)."""
    rows.append(row)
    print(json.dumps(row), flush=True)
    if jsonl:
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished jobs/adapt.py run folders")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--methods", nargs="+", default=list(CHECKPOINTS))
    p.add_argument("--batch", type=int, default=8, help="patches per statistics batch (the quick profile's U-net batch)")
    p.add_argument("--jsonl", type=Path, help="append one row per run and method")
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        config = json.loads((run / "report.json").read_text())
        overlap = load_profile(config["profile"]).overlap
        store = CityStore(run / "stores" / "target.zarr")
        for method in args.methods:
            src = run / CHECKPOINTS[method]
            if not src.exists():
                continue
            row = {"run": str(run), "method": method, "report_miou": config["methods"].get(method, {}).get("miou")}
            for variant, ckpt in (("as_run", src), ("adabn", args.out / run.name / f"{method}_adabn.pt")):
                t0 = time.perf_counter()
                if variant == "adabn":
                    adabn_checkpoint(src, ckpt, store, args.batch, seed=0)
                out = args.out / run.name / f"maps_{method}_{variant}"
                map_region(store.path, ckpt, out, overlap=overlap, precision="auto", overwrite=True)
                row[f"{variant}_miou"] = round(score_maps(store, out)["miou"], 2)
                row[f"{variant}_s"] = round(time.perf_counter() - t0, 1)
            emit(row, rows, args.jsonl)
    print("\n| run | method | as run | AdaBN | change |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['run']).name} | {r['method']} | {r['as_run_miou']:.2f} | {r['adabn_miou']:.2f} | "
              f"{r['adabn_miou'] - r['as_run_miou']:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
