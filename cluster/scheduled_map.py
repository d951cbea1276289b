"""Entrypoint of the scheduled region mapping: get the GPUs, then run jobs/map_region.py into a dated folder.

    python cluster/scheduled_map.py --gpus 2 -- --run-dir /shared/runs/NAME \\
        --input '/shared/incoming/region/*.tif' --out /shared/maps/region/{date} --workers 2

Everything after ``--`` goes to jobs/map_region.py unchanged, except that ``{date}`` becomes the run's
UTC date (``--date-format``, default YYYY-MM-DD), so each scheduled run writes its own folder and a
re-run on the same day resumes it. Before that, ``--gpus N`` asks the autoscaler for N GPUs and waits
for them (cluster/wait_for_gpus.py; map_region sizes its mapping tasks from the GPUs present when it
starts). One plain command, so it is safe as a RayJob entrypoint: KubeRay's submitter pastes the
entrypoint into a shell line, where ``&&`` or ``$(date)`` would run in the submitter pod, not on Ray.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAP_REGION = HERE.parent / "jobs" / "map_region.py"


def build_command(map_args: list[str], *, now: dt.datetime, date_format: str = "%Y-%m-%d") -> list[str]:
    """The map_region command line with ``{date}`` filled in."""
    if not map_args:
        raise SystemExit("scheduled_map: give jobs/map_region.py's arguments after --")
    stamp = now.astimezone(dt.timezone.utc).strftime(date_format)
    return [sys.executable, str(MAP_REGION), *(a.replace("{date}", stamp) for a in map_args)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, map_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=0, help="GPUs to get from the autoscaler first (0: none, CPU mapping)")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for the GPUs")
    p.add_argument("--date-format", default="%Y-%m-%d", help="strftime format that replaces {date}")
    p.add_argument("--dry-run", action="store_true", help="print the map_region command and stop")
    args = p.parse_args(ours)
    cmd = build_command(map_args, now=dt.datetime.now(dt.timezone.utc), date_format=args.date_format)
    print("scheduled_map:", " ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    if args.gpus > 0:
        from wait_for_gpus import main as wait_main  # cluster/wait_for_gpus.py: a script's folder is on its path

        if wait_main([str(args.gpus), "--timeout", str(args.timeout)]) != 0:
            return 1
    # a child of this entrypoint: same job, same logs, stopped with it; its ray.init() joins the same cluster
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
