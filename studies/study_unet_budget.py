"""Does a longer-trained (or a rate-decayed) source U-net narrow the methods' seed spread? (issues 18 and 24)

``study_union.py`` found that much of SemI2I's seed spread on the main Dubai pair belongs to the
quick profile's source U-net (300 steps): one generator scored 41.5, 42.4 and 28.9 mIoU with three
source U-nets. This study retrains each finished run's source U-net with ``--steps`` steps (same seed,
same data, same settings otherwise), fine-tunes it on the run's own stylized sources (``--methods``,
the run's fine-tune settings) and scores the target as adapt does, so each method's spread over the
runs can be compared at both U-net budgets. ``--train-schedule cosine`` trains the source U-net (and, with
``--oracle``, the target oracle) with ``unet.train_lr_schedule: cosine`` instead of the run's setting.
Results: ``<out>/results.jsonl``, one line per (run, method).

    python studies/study_unet_budget.py --config jobs/configs/dubai-bright-to-sensor.yaml --steps 900 \\
        --runs runs/speed/ema-seed1000 runs/speed/ema-s1 runs/s18/main-s2 --out runs/unet-budget
    python studies/study_unet_budget.py --config jobs/configs/dubai-bright-to-sensor.yaml --steps 300 \\
        --train-schedule cosine --oracle --runs RUN_S0 RUN_S1 RUN_S2 --out runs/unet-cosine
    python studies/study_unet_budget.py --config jobs/configs/dubai-bright-to-sensor.yaml --steps 300 \\
        --unet class_balance=0.5 --oracle --runs RUN_S0 RUN_S1 RUN_S2 --out runs/class-balance
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import yaml

from finished_runs import written_rows
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
    p.add_argument("--train-schedule", choices=["constant", "cosine"], help="unet.train_lr_schedule (default: the profile's)")
    p.add_argument("--unet", nargs="*", default=[], metavar="KEY=VALUE",
                   help="other unet settings for every U-net of the study, e.g. class_balance=0.5")
    p.add_argument("--oracle", action="store_true", help="also retrain and score the target oracle")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = written_rows(results, "run", "method")
    for run in args.runs:
        seed = yaml.safe_load((run / "config.resolved.yaml").read_text())["seed"]
        p_ = load_adapt_config(args.config, seed=seed).profile
        unet = p_.unet if args.train_schedule is None else dataclasses.replace(p_.unet, train_lr_schedule=args.train_schedule)
        extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.unet)}
        unet = dataclasses.replace(unet, **extra)
        tag = f"s{seed}_{args.steps}_{unet.train_lr_schedule}" + "".join(f"_{k}{v}" for k, v in extra.items())
        source, target = CityStore(run / "stores" / "source.zarr"), CityStore(run / "stores" / "target.zarr")
        src = f"unet_source_{tag}.pt"
        t0 = time.perf_counter()
        if not (args.out / src).exists():
            fit_unet(unet, [source.path], args.out, stage=f"source_{tag}", output=src, steps=args.steps,
                     overlap=p_.overlap, seed=seed, checkpoint_every=max(1, args.steps // 4), scaling=Scaling(num_workers=1))
        log.info("source U-net of seed %d, %d steps (%s rate): %.0f s", seed, args.steps, unet.train_lr_schedule,
                 time.perf_counter() - t0)
        names = {m: f"unet_{tag}_{m}.pt" for m in args.methods}
        jobs = [unet_job(unet, [run / "stylized" / m / "store.zarr"], stage=f"{tag}_{m}", output=out,
                         init=args.out / src, steps=p_.unet.finetune_steps, overlap=p_.overlap, seed=seed,
                         checkpoint_every=max(1, p_.unet.finetune_steps // 2)) for m, out in names.items()]
        if args.oracle:  # as adapt trains it: from scratch on the target, the run's train_steps
            names["target_oracle"] = f"unet_{tag}_target_oracle.pt"
            jobs.append(unet_job(unet, [target.path], stage=f"oracle_{tag}", output=names["target_oracle"],
                                 overlap=p_.overlap, seed=seed, checkpoint_every=max(1, unet.train_steps // 4)))
        fit_unets(jobs, args.out, f"finetune_{tag}", Scaling(num_workers=1))
        for method, ckpt in {"source_only": src, **names}.items():
            if (str(run), method) in done:
                continue
            maps = args.out / "maps" / f"{tag}_{method}"
            map_region(target.path, args.out / ckpt, maps, overlap=p_.overlap, overwrite=True,
                       precision=unet.precision, tf32=unet.tf32)  # adapt's arithmetic
            s = score_maps(target, maps)
            row = {"run": str(run), "seed": seed, "steps": args.steps, "train_lr_schedule": unet.train_lr_schedule,
                   **{f"unet.{k}": v for k, v in extra.items()}, "method": method, "miou": round(s["miou"], 2), "iou": s["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log.info("seed %d, %d-step source U-net, %s: mIoU %.2f", seed, args.steps, method, row["miou"])


if __name__ == "__main__":
    main()
