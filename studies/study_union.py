"""Fine-tune on the union of several SemI2I generators' stylized sources, or on one (issue 18).

A SemI2I generator is a draw: on the main Dubai pair two seeds' generators gave 41.5 and 36.7 mIoU
through the same adapt protocol. Picking one generator without labels is what ``semi2i.seeds`` does
(the medoid); this study asks whether the pick is needed at all: fine-tune the source U-net once on
the stylized sources of K generators together (each step's patches drawn from all K), so that no
single generator's artefacts dominate, at the same fine-tune budget.

Input: K finished adapt run folders of one pair (each with ``stylized/semi2i/store.zarr``,
``unet_source.pt``, ``stores/target.zarr``, ``config.resolved.yaml``). For each run's source U-net
(its own seed) this fine-tunes, with the run's own fine-tune settings, on each generator's stylized
source alone (``single_g<j>``; ``j`` = the run's own generator reproduces that run's SemI2I row) and on
all of them (``union``), maps the target and scores it as adapt does. Results go to
``<out>/results.jsonl``, one line per (U-net, variant).

    python studies/study_union.py --config jobs/configs/dubai-bright-to-sensor.yaml \\
        --runs runs/speed/ema-seed1000 runs/speed/ema-s1 runs/s18/main-s2 --out runs/union
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
from semi2i.training.distributed import Scaling, fit_unets, unet_job

log = logging.getLogger("study_union")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the pair's adapt config (the runs' profile)")
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders of that pair")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    stylized = [str((r / "stylized" / "semi2i" / "store.zarr").resolve()) for r in args.runs]
    seeds = [yaml.safe_load((r / "config.resolved.yaml").read_text())["seed"] for r in args.runs]
    done = set()
    results = args.out / "results.jsonl"
    if results.exists():
        done = {(d["unet_run"], d["variant"]) for d in map(json.loads, results.read_text().splitlines())}
    for i, run in enumerate(args.runs):
        cfg = load_adapt_config(args.config, seed=seeds[i])
        p_ = cfg.profile
        variants = {f"single_g{j}": [stylized[j]] for j in range(len(stylized))} | {"union": stylized}
        jobs = [unet_job(p_.unet, stores, stage=f"u{i}_{name}", output=f"unet_u{i}_{name}.pt",
                         init=run / "unet_source.pt", steps=p_.unet.finetune_steps, overlap=p_.overlap, seed=cfg.seed,
                         checkpoint_every=max(1, p_.unet.finetune_steps // 2))
                for name, stores in variants.items() if (str(run), name) not in done]
        t0 = time.perf_counter()
        fit_unets(jobs, args.out, f"union_u{i}", Scaling(num_workers=1))
        log.info("fine-tunes of U-net %d: %.0f s", i, time.perf_counter() - t0)
        target = CityStore(run / "stores" / "target.zarr")
        for name in variants:
            if (str(run), name) in done:
                continue
            maps = args.out / "maps" / f"u{i}_{name}"
            map_region(target.path, args.out / f"unet_u{i}_{name}.pt", maps, overlap=p_.overlap, overwrite=True)
            s = score_maps(target, maps)
            row = {"unet_run": str(run), "unet_seed": seeds[i], "variant": name, "generators": variants[name],
                   "miou": round(s["miou"], 2), "iou": s["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log.info("U-net %d %s: mIoU %.2f", i, name, row["miou"])


if __name__ == "__main__":
    main()
