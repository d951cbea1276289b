"""Fine-tune on the stylized source together with the original source (issue 18).

The fine-tune stage starts from the source U-net and trains it on the stylized source only. Where the
target looks like the source (the mild Dubai pair) every such fine-tune lowered classes the source U-net
already mapped well (water 77 -> 57 IoU): it replaces the source appearance instead of adding the target's.
Training on translated *and* original images is the usual guard against that forgetting (a U-net then
learns each class under both appearances); this study measures it before the product gets it.

Input: finished adapt run folders (each with ``stylized/<method>/store.zarr``, ``unet_source.pt``,
``stores/{source,target}.zarr``, ``config.resolved.yaml``). For each run and each method this fine-tunes the
run's source U-net with the run's own fine-tune settings (steps, batch, cosine rate, seed) on the union of the
stylized and the original source windows (half of each, the two stores having the same windows), maps the
target and scores it as adapt does. ``--variants plain`` redoes the product's own fine-tune (stylized only)
as a check that the rest is comparable. Results go to ``<out>/results.jsonl``, one line per (run, method,
variant); a re-run skips what is there. ``--variants histmatched`` / ``meanmatched`` fine-tune on the stylized source after a
per-band quantile / mean match to the target (:func:`recalibrated`).

    python studies/study_mix.py --runs runs/s38/bright-to-dark-s0 --methods semi2i colormapgan --out runs/mix
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from finished_runs import run_config, written_rows
from semi2i.data.store import CityStore
from semi2i.mapping import map_region
from semi2i.pipeline import score_maps
from semi2i.training.distributed import Scaling, fit_unets, unet_job

log = logging.getLogger("study_mix")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders")
    p.add_argument("--methods", nargs="+", default=["semi2i", "colormapgan"])
    p.add_argument("--variants", nargs="+", default=["mixed"], choices=["mixed", "plain", "mixed_bn", "histmatched", "meanmatched"])
    p.add_argument("--bn-batches", type=int, default=50, help="mixed_bn: batches of stylized patches for the statistics")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = written_rows(results, "run", "method", "variant")
    for run in args.runs:
        cfg = run_config(run)
        unet = cfg.profile.unet
        source = str((run / "stores" / "source.zarr").resolve())
        todo = [(m, v) for m in args.methods for v in args.variants if (str(run), m, v) not in done]
        trained = {(m, "mixed" if v == "mixed_bn" else v) for m, v in todo}
        tag = run.name
        jobs = []
        for method, variant in sorted(trained):
            if (args.out / f"unet_{tag}_{method}_{variant}.pt").exists():
                continue
            stylized = str((run / "stylized" / method / "store.zarr").resolve())
            if variant in ("histmatched", "meanmatched"):
                stylized = str(recalibrated(Path(stylized), run / "stores" / "target.zarr", args.out / "stylized" / f"{tag}_{method}_{variant}",
                                            variant))
            stores = [stylized, source] if variant == "mixed" else [stylized]
            jobs.append(unet_job(unet, stores, stage=f"{tag}_{method}_{variant}", output=f"unet_{tag}_{method}_{variant}.pt",
                                 init=run / "unet_source.pt", steps=unet.finetune_steps, overlap=cfg.profile.overlap,
                                 seed=cfg.seed, checkpoint_every=max(1, unet.finetune_steps // 2)))
        started = time.perf_counter()
        if jobs:
            fit_unets(jobs, args.out, f"mix_{tag}", Scaling(num_workers=1))
        log.info("%s: %d fine-tunes in %.0f s", run, len(jobs), time.perf_counter() - started)
        target = CityStore(run / "stores" / "target.zarr")
        report = json.loads((run / "report.json").read_text())["methods"]
        for method, variant in todo:
            if variant == "mixed_bn":
                stylized_bn(args.out / f"unet_{tag}_{method}_mixed.pt", run / "stylized" / method / "store.zarr",
                            args.out / f"unet_{tag}_{method}_mixed_bn.pt", unet, args.bn_batches, cfg.seed)
            maps = args.out / "maps" / f"{tag}_{method}_{variant}"
            map_region(target.path, args.out / f"unet_{tag}_{method}_{variant}.pt", maps, overlap=cfg.profile.overlap,
                       overwrite=True)
            s = score_maps(target, maps)
            row = {"run": str(run), "seed": cfg.seed, "method": method, "variant": variant,
                   "miou": round(s["miou"], 2), "report_miou": round(report[method]["miou"], 2),
                   "source_only_miou": round(report["source_only"]["miou"], 2), "iou": s["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log.info("%s %s %s: mIoU %.2f (run's report: %.2f)", run, method, variant, row["miou"], row["report_miou"])


def recalibrated(stylized: Path, target: Path, out_dir: Path, variant: str) -> Path:
    """The stylized source city with each band mapped onto the target city's distribution: ``histmatched``
    matches the quantiles (the histogram-matching baseline applied to a stylizer's output), ``meanmatched``
    scales each band to the target's mean (gray world's von Kries gain). Why: a GAN trained with L1
    reconstruction terms regresses towards the mean, and SemI2I's stylized city was lower in contrast or
    offset against the target in its per-class colours; these restore the target's per-band statistics while
    keeping the stylizer's class-dependent (non-monotone) mapping."""
    from semi2i.stylize import stylize_city
    from semi2i.stylizers import GrayWorldStylizer, HistogramMatchingStylizer

    if (out_dir / "store.zarr").exists():
        return out_dir / "store.zarr"
    src, tgt = CityStore(stylized), CityStore(target)
    kind = HistogramMatchingStylizer if variant == "histmatched" else GrayWorldStylizer
    return Path(stylize_city(src, kind(src.band_stats, tgt.band_stats), out_dir,
                             target_dtype=tgt.dataset(tgt.rasters[0].id).image.dtype).path)


def stylized_bn(checkpoint: Path, stylized: Path, out: Path, unet, batches: int, seed: int) -> None:
    """The fine-tuned U-net with its BatchNorm statistics re-estimated on stylized-source patches alone: the
    mixed fine-tune's running statistics are those of both appearances, the target looks like one of them."""
    import numpy as np
    import torch

    from semi2i.checkpoints import load_checkpoint, save_checkpoint
    from semi2i.data.normalize import BandStats
    from semi2i.data.patches import city_windows
    from semi2i.models.unet import UNet

    state = load_checkpoint(checkpoint)
    cfg = state["unet"]
    model = UNet(state["in_bands"], state["num_classes"], cfg["base_width"], cfg["depth"])
    model.load_state_dict(state["model"])
    store, stats = CityStore(stylized), BandStats.from_attrs(state["stats"])
    windows = city_windows(store, unet.patch_size, 0)
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            picked = [windows[i] for i in rng.integers(len(windows), size=unet.batch_size)]
            images = [stats.zscore(store.read_window(w.raster, w.y, w.x, unet.patch_size, unet.patch_size)[0]) for w in picked]
            model(torch.from_numpy(np.stack(images).astype(np.float32)))
    save_checkpoint(out, {**state, "model": model.state_dict()})


if __name__ == "__main__":
    main()
