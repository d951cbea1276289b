"""Does a longer-trained source U-net narrow the methods' seed spread? (issues 18 and 24)

``study_union.py`` found that much of SemI2I's seed spread on the main Dubai pair belongs to the
quick profile's source U-net (300 steps): one generator scored 41.5, 42.4 and 28.9 mIoU with three
source U-nets. This study retrains each finished run's source U-net with ``--steps`` steps (same seed,
same data, same settings otherwise), fine-tunes it on the run's own stylized sources (``--methods``,
the run's fine-tune settings) and scores the target as adapt does, so each method's spread over the
runs can be compared at both U-net budgets. Results: ``<out>/results.jsonl``, one line per (run, method).

    python studies/study_unet_budget.py --config jobs/configs/dubai-bright-to-sensor.yaml --steps 900 \\
        --runs runs/speed/ema-seed1000 runs/speed/ema-s1 runs/s18/main-s2 --out runs/unet-budget
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import yaml

from semi2i.adapt_config import load_adapt_config
from semi2i.data.store import CityStore
from semi2i.mapping import map_region
from semi2i.pipeline import score_maps
from semi2i.training.distributed import Scaling, fit_unet, fit_unets, unet_job

log = logging.getLogger("study_unet_budget")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the pair's adapt config (the runs' profile)")
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders of that pair")
    p.add_argument("--steps", type=int, required=True, help="source U-net training steps")
    p.add_argument("--methods", nargs="+", default=["semi2i", "colormapgan"], help="stylized sources to fine-tune on")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = {(d["run"], d["method"]) for d in map(json.loads, results.read_text().splitlines())} if results.exists() else set()
    for run in args.runs:
        seed = yaml.safe_load((run / "config.resolved.yaml").read_text())["seed"]
        p_ = load_adapt_config(args.config, seed=seed).profile
        source, target = CityStore(run / "stores" / "source.zarr"), CityStore(run / "stores" / "target.zarr")
        src = f"unet_source_s{seed}_{args.steps}.pt"
        t0 = time.perf_counter()
        if not (args.out / src).exists():
            fit_unet(p_.unet, [source.path], args.out, stage=f"source_s{seed}_{args.steps}", output=src, steps=args.steps,
                     overlap=p_.overlap, seed=seed, checkpoint_every=max(1, args.steps // 4), scaling=Scaling(num_workers=1))
        log.info("source U-net of seed %d, %d steps: %.0f s", seed, args.steps, time.perf_counter() - t0)
        names = {m: f"unet_s{seed}_{args.steps}_{m}.pt" for m in args.methods}
        jobs = [unet_job(p_.unet, [run / "stylized" / m / "store.zarr"], stage=f"s{seed}_{args.steps}_{m}", output=out,
                         init=args.out / src, steps=p_.unet.finetune_steps, overlap=p_.overlap, seed=seed,
                         checkpoint_every=max(1, p_.unet.finetune_steps // 2)) for m, out in names.items()]
        fit_unets(jobs, args.out, f"finetune_s{seed}_{args.steps}", Scaling(num_workers=1))
        for method, ckpt in {"source_only": src, **names}.items():
            if (str(run), method) in done:
                continue
            maps = args.out / "maps" / f"s{seed}_{args.steps}_{method}"
            map_region(target.path, args.out / ckpt, maps, overlap=p_.overlap, overwrite=True)
            s = score_maps(target, maps)
            row = {"run": str(run), "seed": seed, "steps": args.steps, "method": method, "miou": round(s["miou"], 2), "iou": s["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log.info("seed %d, %d-step source U-net, %s: mIoU %.2f", seed, args.steps, method, row["miou"])


if __name__ == "__main__":
    main()
