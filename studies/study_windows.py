"""Study: do the mapping's fitted windows of twice the patch change the class maps' quality?

Region mapping (and the adapt run's scoring) used to run the U-net over windows of its training patch
size; it now uses windows of twice the patch, fitted to each raster (:func:`semi2i.tiling.default_window`,
:func:`semi2i.tiling.fitted_window`), which computes fewer overlapping pixels. This trains U-nets the way
the quick profile does (the harness of ``study_budget.py``: no Ray) and scores the target with both window
layouts, whole rasters blended with the profile's overlap; it prints one JSON line per model and setting
(mIoU, pixels computed per raster pixel, seconds).

    python studies/study_windows.py --data ../shared/data --pair bright-to-sensor --seeds 0 1 --models oracle
    python studies/study_windows.py --data ../shared/data --seeds 0 --models oracle --fitted 256 512   # other edges
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from semi2i.config import load_profile
from semi2i.metrics import confusion_matrix, scores
from semi2i.models.unet import UNet
from semi2i.tiling import blend_tiles, default_window, tile_starts, window_size

from study_budget import CLASSES, IGNORE, PAIRS, band_stats, load_domain, train_unet


def computed_pixels(height: int, width: int, tile: int, overlap: int, fit: bool) -> int:
    """Pixels the network computes over one raster with this window layout."""
    th, tw = window_size(height, tile, overlap, fit), window_size(width, tile, overlap, fit)
    return len(tile_starts(height, th, overlap)) * len(tile_starts(width, tw, overlap)) * th * tw


@torch.no_grad()
def score(model: UNet, rasters, stats, tile: int, overlap: int, fit: bool) -> dict:
    model.eval()
    cm = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    started, computed, pixels = time.perf_counter(), 0, 0
    for image, label in rasters:
        logits = blend_tiles(image, model, len(CLASSES), tile=tile, overlap=overlap, batch_tiles=max(1, 65536 // tile**2),
                             prepare=stats.zscore, fit=fit)
        cm += confusion_matrix(logits.argmax(0), label, len(CLASSES), IGNORE)
        computed += computed_pixels(*image.shape[1:], tile, overlap, fit)
        pixels += image.shape[1] * image.shape[2]
    return {"miou": round(scores(cm, CLASSES)["miou"], 2), "computed_per_pixel": round(computed / pixels, 3),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--pair", choices=list(PAIRS), default="bright-to-sensor")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--models", nargs="+", choices=("source_only", "oracle"), default=["source_only", "oracle"],
                   help="U-nets trained on the source and on the target (the oracle), one per seed")
    p.add_argument("--fitted", type=int, nargs="+", default=None,
                   help="fitted window edges to score beside the patch-size layout (default: the product's, twice the patch)")
    args = p.parse_args()
    profile = load_profile("quick")
    cfg, overlap = profile.unet, profile.overlap
    source_name, target_name = PAIRS[args.pair]
    source, target = load_domain(args.data, source_name), load_domain(args.data, target_name)
    fitted = args.fitted or [default_window(cfg.patch_size)]
    layouts = [("patch", cfg.patch_size, False)] + [(f"fitted_{w}", w, True) for w in fitted]
    models = [(name, seed, source if name == "source_only" else target) for name in args.models for seed in args.seeds]
    for name, seed, train_on in models:
        torch.manual_seed(seed)
        stats = band_stats(train_on)
        model = train_unet(UNet(3, len(CLASSES), cfg.base_width, cfg.depth), train_on, stats, cfg.train_steps, cfg, seed, "cpu")
        for layout, tile, fit in layouts:
            row = {"pair": args.pair, "model": name, "seed": seed, "layout": layout, "window": tile, "overlap": overlap,
                   **score(model, target, stats, tile, overlap, fit)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
