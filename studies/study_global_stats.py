"""Global style statistics from one pass over the target after training, instead of Algorithm 1's EMA (issue 18, hypothesis 5).

Algorithm 1 estimates the target's global μ, σ (what every source patch is painted with) as an
exponential average over training steps: with d_rate 0.95 and batch-1 steps that is the last ~20
target patches. This study asks whether that estimate is a source of error or of seed-to-seed
spread: for a finished adapt run it

1. encodes every full, non-overlapping training-size tile of the target with the stylizing encoder
   (the weight EMA's, as the stylizer uses) and averages the tiles' μ and σ (the one-pass estimate),
2. reports how far the run's Algorithm-1 statistics lie from it (per channel, in units of the
   tiles' own spread, and relative to the value),
3. stylizes the source with the one-pass statistics, fine-tunes the run's source U-net on it with the
   run's own fine-tune (the product's Ray Train path, seed and steps), maps and scores the target as adapt
   does, beside the run's own SemI2I row.

    python studies/study_global_stats.py --config jobs/configs/dubai-bright-to-dark.yaml \\
        --runs runs/s18/mild-s0 --out runs/global-stats

Input: adapt run folders of one pair (``semi2i.pt``, ``unet_source.pt``, ``stores/``, ``report.json``,
``config.resolved.yaml``). One JSON line per run in ``<out>/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from semi2i.adapt_config import load_adapt_config
from semi2i.checkpoints import load_stylizing_models
from semi2i.data.store import CityStore
from semi2i.mapping import map_region
from semi2i.models.semi2i import channel_stats
from semi2i.pipeline import score_maps
from semi2i.stylize import stylize_city
from semi2i.stylizers import SemI2IStylizer
from semi2i.training.distributed import Scaling, fit_unets, unet_job

log = logging.getLogger("study_global_stats")


@torch.no_grad()
def tile_styles(store: CityStore, encoder: torch.nn.Module, size: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of every full, non-overlapping ``size`` tile of the store, each (tiles, C)."""
    mus, sigmas = [], []
    for raster in store.rasters:
        unit = store.band_stats.to_unit_range(store.dataset(raster.id).image.values)
        h, w = unit.shape[-2:]
        tiles = [unit[:, y:y + size, x:x + size] for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]
        for i in range(0, len(tiles), 32):
            mu, sigma = channel_stats(encoder(torch.as_tensor(np.stack(tiles[i:i + 32])).float())[0], eps)
            mus.append(mu)
            sigmas.append(sigma)
    return torch.cat(mus), torch.cat(sigmas)


def deviation(ema: torch.Tensor, tiles: torch.Tensor) -> dict:
    """How far Algorithm 1's value lies from the tiles' mean: in tile-spread units and relative, mean and max over channels."""
    mean, spread = tiles.mean(0), tiles.std(0)
    z, rel = (ema - mean).abs() / spread, (ema - mean).abs() / mean.abs()
    return {"z_mean": round(float(z.mean()), 3), "z_max": round(float(z.max()), 3),
            "rel_mean": round(float(rel.mean()), 4), "rel_max": round(float(rel.max()), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the pair's adapt config (the runs' profile)")
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders of that pair")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        seed = yaml.safe_load((run / "config.resolved.yaml").read_text())["seed"]
        prof = load_adapt_config(args.config, seed=seed).profile
        source, target = CityStore(run / "stores" / "source.zarr"), CityStore(run / "stores" / "target.zarr")
        generator, style, cfg = load_stylizing_models(run / "semi2i.pt")
        mu, sigma = tile_styles(target, generator.enc_b, cfg.patch_size, cfg.adain_eps)
        ema_mu, ema_sigma = style.style("b")
        row = {"run": str(run), "seed": seed, "target_tiles": len(mu),
               "mu": deviation(ema_mu, mu), "sigma": deviation(ema_sigma, sigma)}
        log.info("%s: %d target tiles; Algorithm 1 vs one pass: mu %s, sigma %s", run, len(mu), row["mu"], row["sigma"])

        style.mu_b.copy_(mu.mean(0))
        style.sigma_b.copy_(sigma.mean(0))
        tag = f"s{seed}_onepass"
        stylizer = SemI2IStylizer(generator, style, source.band_stats, target.band_stats, overlap=prof.overlap,
                                  tile_size=cfg.patch_size)
        t0 = time.perf_counter()
        stylized = stylize_city(source, stylizer, args.out / "stylized" / tag, target_dtype=target.dtype, overwrite=True)
        row["stylize_s"] = round(time.perf_counter() - t0, 1)
        job = unet_job(prof.unet, [stylized.path], stage=f"ft_{tag}", output=f"unet_{tag}.pt", init=run / "unet_source.pt",
                       steps=prof.unet.finetune_steps, overlap=prof.overlap, seed=seed,
                       checkpoint_every=max(1, prof.unet.finetune_steps // 2))
        fit_unets([job], args.out, f"global_stats_{tag}", Scaling(num_workers=1))
        maps = args.out / "maps" / tag
        map_region(target.path, args.out / f"unet_{tag}.pt", maps, overlap=prof.overlap, overwrite=True)
        scored = score_maps(target, maps)
        report = json.loads((run / "report.json").read_text())["methods"]
        row |= {"miou_one_pass": round(scored["miou"], 2), "iou_one_pass": scored["iou"],
                "miou_algorithm1": report["semi2i"]["miou"], "miou_colormapgan": report.get("colormapgan", {}).get("miou"),
                "miou_source_only": report["source_only"]["miou"]}
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("%s: SemI2I mIoU with one-pass statistics %.2f, with Algorithm 1's %.2f", run, row["miou_one_pass"],
                 row["miou_algorithm1"])


if __name__ == "__main__":
    main()
