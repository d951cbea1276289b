"""Estimate the target's class proportions from a finished adapt run, without target labels, for
``semi2i.target_class_prior`` (:mod:`semi2i.target_prior` says how and why).

    python jobs/target_prior.py --run-dir runs/dubai-bright-to-sensor
    python jobs/target_prior.py --run-dir runs/dubai-bright-to-sensor --config jobs/configs/dubai-bright-to-sensor.yaml \\
        --config-out runs/prior.yaml     # then: python jobs/adapt.py --config runs/prior.yaml \\
                                         #   --reuse-from runs/dubai-bright-to-sensor --run-dir runs/prior

Prints the estimate as JSON; with ``--config-out``, writes ``--config`` with the prior added to its
``overrides`` (a new file; an existing one is refused). Exits 2 with one line when the run cannot give one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from semi2i.adapt_config import read_config_file
from semi2i.config import ConfigError
from semi2i.locations import write_text
from semi2i.target_prior import PriorError, estimate_target_prior


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a finished jobs/adapt.py run folder (report.json, stores/, maps/)")
    p.add_argument("--method", help="take this method's target map (default: the highest label-free score)")
    p.add_argument("--config", help="the adapt config to extend (with --config-out)")
    p.add_argument("--config-out", help="write --config plus overrides.semi2i.target_class_prior here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if bool(args.config) != bool(args.config_out):
        print("error: --config and --config-out go together", file=sys.stderr)
        return 2
    try:
        estimate = estimate_target_prior(args.run_dir, args.method)
    except PriorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(estimate, indent=1))
    if args.config_out:
        out = Path(args.config_out)
        if out.exists():
            print(f"error: {out}: exists; choose a new file", file=sys.stderr)
            return 2
        try:
            config = read_config_file(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        config.setdefault("overrides", {}).setdefault("semi2i", {})["target_class_prior"] = estimate["prior"]
        write_text(out, f"# {args.config} with the target class prior estimated from {args.run_dir} "
                        f"({estimate['method']}'s map, jobs/target_prior.py)\n" + yaml.safe_dump(config, sort_keys=False))
        print(f"wrote {out}", file=sys.stderr)
    return 0
