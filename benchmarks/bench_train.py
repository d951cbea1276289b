"""Ray Train benchmark: SemI2I steps/s and U-net samples/s with 1 vs N workers, and with the patches read
in the workers vs by Ray Data (``data_plane``, :mod:`semi2i.training.step_data`).

    python benchmarks/bench_train.py [--workers 1 2] [--data worker ray_data] [--threads 1] [--semi2i-steps 40]
                                     [--unet-steps 30] [--profile quick]

Each worker uses ``--threads`` torch threads (default 1; perf-notes: more threads per worker only fight
over the cores). Rates are measured inside the workers from the first step on (Ray/worker start-up
excluded, the data stream's start-up included); "wall" is the whole ``fit_*`` call. One SemI2I step
processes one patch per domain per worker, so N workers do N patches per step. A (workers, data) pair
that leaves Ray Data no CPU on this machine is skipped and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
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
    p.add_argument("--data", nargs="+", default=["worker", "ray_data"], choices=["worker", "ray_data"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    prof = load_profile(args.profile)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    files = make_demo_cities(tmp / "data", size=1024, rasters_per_city=2)
    stores = {name: ingest_city([str(x) for x in f.images], tmp / f"{name}.zarr", labels=[str(x) for x in f.labels],
                                classes=tmp / "data" / "classes.json", progress=False) for name, f in files.items()}
    ray.init(include_dashboard=False, log_to_driver=False)
    rows = []
    for n in args.workers:
        for k, data in enumerate(args.data):
            scaling = Scaling(num_workers=n, use_gpu=args.gpu, threads_per_worker=args.threads, max_failures=0, data=data)
            cfg = dataclasses.replace(prof.semi2i, checkpoint_every=10**9, log_every=10**9)
            t0 = time.perf_counter()
            try:
                s = fit_semi2i(cfg, stores["demo_source"].path, stores["demo_target"].path, tmp / f"semi2i_{n}_{data}_{k}",
                               overlap=prof.overlap, scaling=scaling, max_steps=args.semi2i_steps)
            except ValueError as exc:
                print(f"skipped: {n} workers, data {data}: {exc}")
                continue
            t1 = time.perf_counter()
            u = fit_unet(prof.unet, [stores["demo_source"].path], tmp / f"unet_{n}_{data}_{k}", steps=args.unet_steps,
                         overlap=prof.overlap, scaling=scaling, checkpoint_every=10**9, log_every=10**9)
            t2 = time.perf_counter()
            rows.append((n, s["data_plane"], s["steps_per_s"], s["steps_per_s"] * n, t1 - t0, u["samples_per_s"], t2 - t1))
    ray.shutdown()
    base = rows[0]
    print(f"profile {prof.name}: SemI2I {prof.semi2i.patch_size}² w={prof.semi2i.base_width} ({args.semi2i_steps} steps), "
          f"U-net {prof.unet.patch_size}² w={prof.unet.base_width} global batch {prof.unet.batch_size} ({args.unet_steps} steps), "
          f"{args.threads} torch thread(s) per worker")
    print("| workers | data | SemI2I steps/s | SemI2I patch pairs/s | vs first row | SemI2I wall s | U-net samples/s | vs first row | U-net wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, data, steps, pairs, s_wall, samples, u_wall in rows:
        print(f"| {n} | {data} | {steps:.2f} | {pairs:.2f} | {pairs / base[3]:.2f}x | {s_wall:.1f} | {samples:.1f} | "
              f"{samples / base[5]:.2f}x | {u_wall:.1f} |")


if __name__ == "__main__":
    main()
