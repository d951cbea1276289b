"""Ray Train scaling benchmark: SemI2I steps/s and U-net samples/s with 1 vs N workers.

    python benchmarks/bench_train.py [--workers 1 2] [--semi2i-steps 40] [--unet-steps 30] [--profile quick]

Each worker uses 1 torch thread (perf-notes: more threads per worker only fight over the cores).
Rates are measured inside the workers from the first step on (Ray/worker start-up excluded). One
SemI2I step processes one patch per domain per worker, so N workers do N patches per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import ray

from semi2i.config import load_profile
from semi2i.data.ingest import ingest_city
from semi2i.demo.cities import make_demo_cities
from semi2i.training.distributed import Scaling, fit_semi2i, fit_unet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--profile", default="quick")
    p.add_argument("--semi2i-steps", type=int, default=40)
    p.add_argument("--unet-steps", type=int, default=30)
    p.add_argument("--gpu", action="store_true")
    args = p.parse_args()
    prof = load_profile(args.profile)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    files = make_demo_cities(tmp / "data", size=1024, rasters_per_city=2)
    stores = {name: ingest_city([str(x) for x in f.images], tmp / f"{name}.zarr", labels=[str(x) for x in f.labels],
                                classes=tmp / "data" / "classes.json", progress=False) for name, f in files.items()}
    ray.init(include_dashboard=False, log_to_driver=False)
    rows = []
    for n in args.workers:
        scaling = Scaling(num_workers=n, use_gpu=args.gpu, threads_per_worker=1, max_failures=0)
        cfg = dataclasses.replace(prof.semi2i, checkpoint_every=10**9, log_every=10**9)
        s = fit_semi2i(cfg, stores["demo_source"].path, stores["demo_target"].path, tmp / f"semi2i_{n}", overlap=prof.overlap,
                       scaling=scaling, max_steps=args.semi2i_steps)
        u = fit_unet(prof.unet, [stores["demo_source"].path], tmp / f"unet_{n}", steps=args.unet_steps, overlap=prof.overlap,
                     scaling=scaling, checkpoint_every=10**9, log_every=10**9)
        rows.append((n, s["steps_per_s"], s["steps_per_s"] * n, u["samples_per_s"]))
    ray.shutdown()
    base = rows[0]
    print(f"profile {prof.name}: SemI2I {prof.semi2i.patch_size}² w={prof.semi2i.base_width}, "
          f"U-net {prof.unet.patch_size}² w={prof.unet.base_width} global batch {prof.unet.batch_size}")
    print("| workers | SemI2I steps/s | SemI2I patch pairs/s | scaling | U-net samples/s | scaling |")
    print("|---|---|---|---|---|---|")
    for n, steps, pairs, samples in rows:
        print(f"| {n} | {steps:.2f} | {pairs:.2f} | {pairs / base[2]:.2f}x | {samples:.1f} | {samples / base[3]:.2f}x |")


if __name__ == "__main__":
    main()
