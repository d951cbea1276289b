"""Adapt several source cities to several target cities with ONE multi-city SemI2I model, end to end.

    python jobs/adapt_multi.py                              # built-in 3-city synthetic demo, quick profile
    python jobs/adapt_multi.py --config my-cities.yaml --workers 2 --seed 1

Config YAML: ``cities: {name: {images, labels, palette|classes}}``, ``sources: [names]``,
``targets: [names]``, ``classes``, ``profile``, ``overrides`` (as jobs/adapt.py). Stages: ingest ->
unet_source (one per source) -> multicity (multicity.pt) -> stylize / finetune (every source != target
pair) -> segment -> report. Each is skipped when its outputs exist, so re-running resumes. Results:
<run-dir>/report.json (one entry per pair) and report.md (one row per pair and method).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from semi2i.cli.adapt import default_run_dir
from semi2i.config import ConfigError
from semi2i.io_paths import refuse_ephemeral
from semi2i.multicity import MultiCityRun, load_multicity_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="multi-city config YAML (default: the built-in 3-city synthetic demo)")
    p.add_argument("--profile", choices=["quick", "paper"], help="settings profile (default: the config's, else quick)")
    p.add_argument("--run-dir", help="run folder, or an object-store URL (s3://bucket/prefix/run) (default: $SEMI2I_RUNS/<config name>, else runs/<config name>)")
    p.add_argument("--workers", type=int, help="Ray Train workers per training stage")
    p.add_argument("--gpu", action="store_true", default=None, help="train on GPUs (one per worker)")
    p.add_argument("--seed", type=int, help="seed for model initialisation, patch order and city pairs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_multicity_config(args.config, profile=args.profile, seed=args.seed, workers=args.workers, gpu=args.gpu)
        run = MultiCityRun(cfg, args.run_dir or default_run_dir(cfg.name))
        refuse_ephemeral(run.run_dir)
    except ConfigError as exc:
        print(f"adapt_multi: config error:\n{exc}", file=sys.stderr)
        return 2
    import ray

    ray.init(ignore_reinit_error=True, log_to_driver=os.environ.get("SEMI2I_WORKER_LOGS", "1") == "1")
    started = time.perf_counter()
    run.run()
    logging.getLogger("adapt_multi").info("done in %.0f s (%s); run folder %s", time.perf_counter() - started,
                                          ", ".join(f"{k} {v:.0f}s" for k, v in run.timings.items()), run.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
