"""Benchmark: how much of a SemI2I step's time the Ray Train loop adds (data, logging, checkpoints, Ray).

    python benchmarks/bench_loop.py [--steps 400] [--profile quick] [--threads 2]

Baseline, measured in the same run: the bare step (:class:`SemI2IStep`, random patches, this process).
Then the same number of steps through ``fit_semi2i`` (one Ray Train worker with the same threads, the
profile's ``log_every`` / ``checkpoint_every``, patches read from a store), rate measured in the worker
from its first step (start-up excluded). ``--poll`` sets Ray Train's controller poll interval
(``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``; Train V2's default is 2 s, the platform's 0.2 s): a run's start
and end wait for that poll, and so does a ``ray.train.report`` made before the controller took the
previous one: ``report_s`` is the time of one report in a run that reports ``--reports`` times back to
back (what every-step logging did), per poll interval. Prints one JSON line and a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

# benchmarks/bench_semi2i.py: Python puts a script's own folder first on its import path
from bench_semi2i import bench as bench_bare_step


def _report_back_to_back(config: dict) -> dict:
    import ray.train

    start = time.perf_counter()
    for i in range(config["reports"]):
        ray.train.report({"i": i})
    return {"report_s": (time.perf_counter() - start) / config["reports"]}


def report_seconds(reports: int, storage: Path, name: str) -> float:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(_report_back_to_back, train_loop_config={"reports": reports},
                           torch_config=TorchConfig(backend="gloo"),
                           scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=ray.train.RunConfig(name=name, storage_path=str(storage)))
    return trainer.fit().return_value["report_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--profile", default="quick")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--poll", type=float, nargs="+", default=[0.2, 2.0], help="controller poll intervals to run (s)")
    p.add_argument("--reports", type=int, default=6, help="back-to-back reports timed per poll interval")
    args = p.parse_args()

    import ray

    from semi2i.config import load_profile
    from semi2i.data.ingest import ingest_city
    from semi2i.demo.cities import make_demo_cities
    from semi2i.training.distributed import Scaling, fit_semi2i

    prof = load_profile(args.profile)
    tmp = Path(tempfile.mkdtemp(prefix="bench_loop_"))
    files = make_demo_cities(tmp / "data", size=1024, rasters_per_city=4)  # enough windows for --steps in the epochs
    stores = {name: ingest_city([str(x) for x in f.images], tmp / f"{name}.zarr", labels=[str(x) for x in f.labels],
                                classes=tmp / "data" / "classes.json", progress=False) for name, f in files.items()}
    cfg = dataclasses.replace(prof.semi2i, in_bands_a=3, in_bands_b=3)
    torch.set_num_threads(args.threads)
    bare = bench_bare_step(prof.name, warmup=5, steps=min(args.steps, 100), bands=3)["s_per_step"]
    ray.init(num_cpus=max(1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    rows = []
    for poll in args.poll:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(poll)  # read by fit_semi2i's controller
        summary = fit_semi2i(cfg, stores["demo_source"].path, stores["demo_target"].path, tmp / f"run_poll{poll}",
                             overlap=prof.overlap, max_steps=args.steps,
                             scaling=Scaling(num_workers=1, threads_per_worker=args.threads, max_failures=0))
        rows.append({"poll_s": poll, "loop_s_per_step": 1.0 / summary["steps_per_s"],
                     "report_s": report_seconds(args.reports, tmp / "reports", f"reports_poll{poll}")})
    ray.shutdown()
    result = {"profile": prof.name, "steps": args.steps, "threads": args.threads, "log_every": cfg.log_every,
              "checkpoint_every": cfg.checkpoint_every, "bare_s_per_step": bare,
              "loops": [{**r, "loop_over_bare": r["loop_s_per_step"] / bare} for r in rows]}
    print(json.dumps(result))
    print(f"| loop | s/step | vs the bare step ({bare:.3f} s) | one back-to-back report (s) |\n|---|---|---|---|")
    for r in result["loops"]:
        print(f"| Ray Train, poll {r['poll_s']:g} s | {r['loop_s_per_step']:.3f} | {r['loop_over_bare']:.2f}x | {r['report_s']:.3f} |")


if __name__ == "__main__":
    main()
