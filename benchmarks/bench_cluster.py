"""Benchmark how much of a job's work its driver does, on a multi-node Ray cluster whose head has no CPUs.

    python benchmarks/bench_cluster.py                               # adapt: 4 rasters of 2048² per city; map: 100 Mpx
    python benchmarks/bench_cluster.py --side 1024 --map-mpx 25 --baseline

Starts a real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: the head, where this
driver runs, with ``num_cpus=0``, and a worker node with this machine's cores), then runs

1. the adapt pipeline (``semi2i.pipeline.AdaptRun``, what ``jobs/adapt.py`` runs) on the synthetic demo
   pair at ``--rasters`` rasters of ``--side``² px per city, with tiny training budgets so that ingest,
   stylize, segment and scoring dominate (the demo rasters are generated before the clock starts);
2. ``map_region`` (what ``jobs/map_region.py`` runs) on one ``--map-mpx`` raster with a random quick-size U-net.

For each it reports the driver's CPU seconds (``time.process_time()`` of this process: all its threads,
Ray's own client threads included), the job's wall seconds, their ratio (the goal: <= 0.10) and the stage
times. ``--baseline`` runs both again with the pieces in the driver (``semi2i.placement`` off, as before
stages were Ray work): the same work, so the two ratios show what moved. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

# benchmarks/bench_map.py: Python puts a script's own folder first on its import path
from bench_map import _checkpoint, _synthetic_raster

TINY_TRAINING = {
    "patch_size": 64, "overlap": 8,
    "semi2i": {"base_width": 4, "n_res_blocks": 1, "disc_width": 4, "patch_size": 64, "epochs": 2, "decay_epoch": 1,
               "max_steps_per_epoch": 2, "checkpoint_every": 2, "log_every": 1},
    "unet": {"base_width": 8, "depth": 3, "patch_size": 64, "batch_size": 2, "train_steps": 3, "finetune_steps": 2},
    "colormapgan": {"disc_width": 4, "patch_size": 64, "epochs": 2, "decay_epoch": 1, "max_steps_per_epoch": 2,
                    "checkpoint_every": 2, "log_every": 1},
    "cyclegan": {"patch_size": 64},  # not run (methods), but the profile must hold together
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=2048, help="edge of each synthetic raster of the adapt pair (px)")
    p.add_argument("--rasters", type=int, default=4, help="rasters per city")
    p.add_argument("--map-mpx", type=float, default=100.0, help="size of the map_region raster (Mpx; 0 skips it)")
    p.add_argument("--baseline", action="store_true", help="also run both with the pixel work in the driver")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    return p.parse_args(argv)


def measure(job) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    extra = job()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"driver_cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "driver_cpu_per_wall": round(cpu / wall, 3), **extra}


def adapt(work: Path, args, tag: str) -> dict:
    from semi2i.adapt_config import load_adapt_config
    from semi2i.demo.cities import make_demo_cities
    from semi2i.pipeline import AdaptRun

    config = {"name": f"bench-cluster-{tag}", "profile": "quick",
              "synthetic": {"size": args.side, "rasters": args.rasters, "seed": 0},
              "classes": ["building", "road", "vegetation", "water", "land"],
              "methods": ["source_only", "histogram_matching", "gray_world", "colormapgan", "semi2i", "target_oracle"],
              "overrides": TINY_TRAINING}
    (work / f"{tag}.yaml").write_text(yaml.safe_dump(config))
    run = AdaptRun(load_adapt_config(work / f"{tag}.yaml"), work / tag)
    make_demo_cities(run.path("data"), size=args.side, rasters_per_city=args.rasters, seed=0)  # the user's files

    def job() -> dict:
        run.run()
        return {"stages_s": {k: round(v, 1) for k, v in run.timings.items()},
                "mpx_per_city": args.rasters * args.side**2 / 1e6}

    return measure(job)


def map_job(work: Path, args, tag: str, use_ray: bool = True) -> dict:
    from semi2i.mapping import map_region

    side = int((args.map_mpx * 1e6) ** 0.5)
    raster = work / f"region_{side}.tif"
    if not raster.exists():
        _synthetic_raster(raster, side)
    checkpoint = _checkpoint(argparse.Namespace(checkpoint=None, base_width=8, depth=3, patch=128), work)

    def job() -> dict:
        summary = map_region(str(raster), checkpoint, work / f"map-{tag}", overlap=16, use_ray=use_ray)
        return {"mpx": round(summary["mpx"], 1), "map_s": round(summary["seconds"], 1)}

    return measure(job)


def main(argv=None) -> None:
    args = parse_args(argv)
    import ray
    from ray.cluster_utils import Cluster

    from semi2i import placement

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=os.cpu_count() or 1)
    ray.init(address=cluster.address, log_to_driver=False)
    rows = {"cpus": os.cpu_count(), "head_cpus": 0}
    try:
        rows["adapt"] = adapt(work, args, "cluster")
        if args.map_mpx:
            rows["map_region"] = map_job(work, args, "cluster")
        if args.baseline:
            real = placement.on_cluster_now
            placement.on_cluster_now = lambda: False  # every piece in this process, as before the stages were Ray work
            try:
                rows["adapt_in_driver"] = adapt(work, args, "driver")
                if args.map_mpx:
                    rows["map_region_in_driver"] = map_job(work, args, "driver", use_ray=False)
            finally:
                placement.on_cluster_now = real
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
