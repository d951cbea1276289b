"""Sweep SemI2I's loss weights λ1-λ4 and decay epoch with Ray Tune + ASHA, and write the best adapt config.

    python jobs/tune.py --config jobs/configs/dubai-bright-to-sensor.yaml --num-samples 16
    python jobs/tune.py --config jobs/configs/tune-demo.yaml --num-samples 4 --run-dir runs/tune-demo
    ray job submit --working-dir . -- python jobs/tune.py --config jobs/configs/<x>.yaml --num-samples 32

FILE is an adapt config (as jobs/adapt.py reads it) with an optional ``tune:`` section (search space,
ASHA, budgets, resources; see README, Tuning); command-line values override it. The objective is the
target mIoU when the target has labels, else the label-free score (docs/label-free-selection.md; the
mIoU, the label-free score and the older proxy are all reported, with how well each tracks the mIoU). Results in the
run folder (default runs/tune-<config name>): results.md/.csv (sorted by the objective), rungs.csv,
best.yaml (run it with jobs/adapt.py). Re-running the same command resumes an interrupted sweep.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from semi2i.remote_run import RemoteRun
from semi2i.config import ConfigError
from semi2i.io_paths import refuse_ephemeral
from semi2i.tuning.resources import ResourceError
from semi2i.tuning.settings import load_sweep_config
from semi2i.tuning.sweep import make_sweep, prepare_shared
from semi2i.tuning.tuner import run_sweep


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="adapt config YAML, optionally with a tune: section (default: the synthetic demo)")
    p.add_argument("--num-samples", type=int, help="trials to sample (default: tune.num_samples, else 8)")
    p.add_argument("--run-dir", help="sweep folder, or an object-store URL (s3://bucket/prefix/sweep) (default: runs/tune-<config name>)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as fit the cluster)")
    p.add_argument("--driver-cpus", type=float, help="CPUs of each trial's driver process (default 1)")
    p.add_argument("--driver-gpus", type=float, help="GPU share of each trial's driver (stylize/segment there; default 0)")
    p.add_argument("--metric", choices=["auto", "miou", "label_free", "proxy"],
                   help="objective (default auto: miou if the target has labels, else label_free)")
    p.add_argument("--profile", choices=["quick", "paper"], help="settings profile (default: the config's, else quick)")
    p.add_argument("--workers", type=int, help="Ray Train workers per trial")
    p.add_argument("--gpu", action="store_true", default=None, help="train on GPUs (one per worker)")
    p.add_argument("--seed", type=int, help="seed for models and patch order (the search seed defaults to it)")
    p.add_argument("--fresh", action="store_true", help="discard a previous sweep in the run folder (keeps shared/)")
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("tune")
    try:
        cfg, settings = load_sweep_config(
            args.config, profile=args.profile, seed=args.seed, workers=args.workers, gpu=args.gpu,
            tune_overrides={"num_samples": args.num_samples, "max_concurrent_trials": args.max_concurrent,
                            "driver_cpus": args.driver_cpus, "driver_gpus": args.driver_gpus,
                            "metric": args.metric})
    except ConfigError as exc:
        print(f"tune: config error:\n{exc}", file=sys.stderr)
        return 2
    # a run folder on object storage: the sweep runs in a local copy, published when shared/ is ready and at the end
    remote = RemoteRun.of(args.run_dir) if args.run_dir else None
    run_dir = remote.local if remote else Path(args.run_dir or Path("runs") / f"tune-{cfg.name}")
    try:  # before Ray starts: a sweep in `ray job submit --working-dir`'s temporary copy is deleted with the job
        refuse_ephemeral(run_dir, hint="pass an absolute --run-dir on shared storage")
    except ConfigError as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    import ray

    # joins the cluster of RAY_ADDRESS / `ray job submit`, else starts a local Ray on this machine
    ray.init(ignore_reinit_error=True, log_to_driver=os.environ.get("SEMI2I_WORKER_LOGS", "1") == "1")
    try:
        # fails fast when the trial resources can never fit (on the driver's node alone for a bucket run folder)
        sweep = make_sweep(cfg, settings, run_dir, on_object_storage=remote is not None)
    except (ResourceError, ConfigError) as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    if args.fresh:
        for name in ("tune", "trials"):
            shutil.rmtree(sweep.run_dir / name, ignore_errors=True)
            if remote:
                (remote.remote / name).remove(commit=None)
    elif remote:
        remote.pull()  # the published sweep (Tuner.restore resumes it) and shared/
    log.info("sweep %s: %d samples, objective %s (%s), %d rungs, %d trial(s) at once (%g driver CPU + %d worker(s) each); %s",
             cfg.name, settings.num_samples, sweep.metric, sweep.mode, sweep.n_rungs, sweep.concurrency,
             settings.driver_cpus, cfg.workers, sweep.run_dir)
    started = time.perf_counter()
    baseline = prepare_shared(sweep)
    if remote:
        remote.publish()
    summary = run_sweep(sweep, verbose=0 if args.quiet else 1, baseline=baseline)
    if remote:
        remote.publish()
    print((sweep.run_dir / "results.md").read_text())
    log.info("done in %.0f s; best config: %s", time.perf_counter() - started, summary["best_config"])
    return 0 if summary["best_config"] else 1


if __name__ == "__main__":
    sys.exit(main())
