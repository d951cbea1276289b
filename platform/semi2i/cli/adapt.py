"""Adapt a segmentation model from a source city to a target city with SemI2I, end to end.

    python jobs/adapt.py                                   # synthetic demo cities, quick profile
    python jobs/adapt.py --config jobs/configs/dubai-bright-to-sensor.yaml --seed 1
    ray job submit --working-dir . -- python jobs/adapt.py --config jobs/configs/<x>.yaml

Stages: ingest -> unet_source -> colormapgan -> cyclegan -> semi2i -> stylize -> finetune -> segment ->
report. Each writes into the run folder (default runs/<config name>) and is skipped when its outputs
exist, so re-running an interrupted job resumes it. Results: <run-dir>/report.json, report.md, previews/*.png, maps/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from semi2i.config import ConfigError
from semi2i.data.ingest import IngestError
from semi2i.data.store import StoreError
from semi2i.io_paths import is_url, refuse_ephemeral
from semi2i.mapping import MappingError
from semi2i.adapt_config import STAGES, load_adapt_config
from semi2i.pipeline import AdaptRun


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="adapt config YAML (default: the built-in synthetic demo)")
    p.add_argument("--profile", choices=["quick", "paper"], help="settings profile (default: the config's, else quick)")
    p.add_argument("--run-dir", help="run folder, or an object-store URL (s3://bucket/prefix/run) (default: $SEMI2I_RUNS/<config name>, else runs/<config name>)")
    p.add_argument("--workers", type=int, help="Ray Train workers per training stage")
    p.add_argument("--gpu", action="store_true", default=None, help="train on GPUs (one per worker)")
    p.add_argument("--seed", type=int, help="seed for model initialisation and patch order")
    p.add_argument("--skip", action="append", default=[], choices=STAGES, metavar="STAGE",
                   help=f"skip a stage (repeatable): {', '.join(STAGES)}")
    p.add_argument("--reuse-from", metavar="RUN_DIR",
                   help="start from what another run folder of the same setting finished, except SemI2I's outputs "
                        "(its config may differ only in semi2i settings, methods and name): for trying SemI2I settings")
    return p.parse_args(argv)


def default_run_dir(name: str) -> Path | str:
    """``$SEMI2I_RUNS/<name>`` (a shared mount or a bucket URL on a cluster), else ``runs/<name>`` under the
    current folder."""
    root = os.environ.get("SEMI2I_RUNS")
    if root and is_url(root):
        return f"{root.rstrip('/')}/{name}"
    return Path(root) / name if root else Path("runs") / name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_adapt_config(args.config, profile=args.profile, seed=args.seed, workers=args.workers, gpu=args.gpu)
        run = AdaptRun(cfg, args.run_dir or default_run_dir(cfg.name), skip=tuple(args.skip))
        refuse_ephemeral(run.run_dir)
        if args.reuse_from:
            run.reuse(args.reuse_from)
        run.check()  # globs, files, headers, class lists, and what a resumed run would skip on: before Ray starts
    except ConfigError as exc:
        sep = "\n" if "\n" in str(exc) else " "
        print(f"adapt: config error:{sep}{exc}", file=sys.stderr)
        return 2
    except (IngestError, StoreError) as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2
    import ray

    # joins the cluster of RAY_ADDRESS / `ray job submit`, else starts a local Ray on this machine
    ray.init(ignore_reinit_error=True, log_to_driver=os.environ.get("SEMI2I_WORKER_LOGS", "1") == "1")
    started = time.perf_counter()
    try:
        report = run.run()
    except (ConfigError, IngestError, StoreError, MappingError) as exc:  # found in the pixels, after Ray started
        print(f"adapt: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("adapt").info("done in %.0f s (%s); run folder %s", time.perf_counter() - started,
                                    ", ".join(f"{k} {v:.0f}s" for k, v in run.timings.items()), run.run_dir)
    if report is None and "report" not in args.skip:
        logging.getLogger("adapt").info("no report: the target has no labels to score against (maps are in %s)", run.path("maps"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
