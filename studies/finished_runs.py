"""What the studies that redo part of a finished ``jobs/adapt.py`` run share: the run's config as adapt would load
it now (refused when its U-net settings have changed since, as the comparison would be void), the rows a
study already wrote (a re-run skips them), and reading and appending JSON-lines rows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from semi2i.adapt_config import AdaptConfig, load_adapt_config

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"


def run_config(run: Path) -> AdaptConfig:
    """The shipped config of ``run``'s pair at the run's seed; exits if the profile's U-net settings differ from the run's."""
    resolved = yaml.safe_load((run / "config.resolved.yaml").read_text())
    cfg = load_adapt_config(CONFIGS / f"{resolved['name']}.yaml", seed=resolved["seed"])
    if dataclasses.asdict(cfg.profile.unet) != resolved["resolved_profile"]["unet"]:
        raise SystemExit(f"{run}: its U-net settings differ from the profile's now; this study would not compare")
    return cfg


def written_rows(results: Path, *keys: str) -> set[tuple]:
    """The ``keys`` of every row already in the JSON-lines file ``results`` (empty when it does not exist)."""
    if not results.exists():
        return set()
    return {tuple(row[k] for k in keys) for row in map(json.loads, results.read_text().splitlines())}


def read_rows(files: list[Path]) -> list[dict]:
    """Every row of the JSON-lines ``files``, in order (blank lines skipped)."""
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def append_row(results: Path | None, row: dict) -> None:
    """Add ``row`` to the JSON-lines file ``results`` (its folder made if needed); None: nowhere."""
    if results is None:
        return
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")
