"""Start a run from another run folder's outputs that cannot differ: ``jobs/adapt.py --reuse-from RUN_DIR``.

Trying SemI2I settings (λ, the EMA, a seed of the generator only) on one pair re-trains and re-maps everything
else for nothing: the stores, the source U-net, the baselines (histogram matching, gray world, ColorMapGAN,
CycleGAN: stylized, fine-tuned, mapped, scored) and the target oracle depend on the cities, the seed, the
workers and every profile section *but* ``semi2i``. So when the other run's ``config.resolved.yaml`` equals
this run's outside ``semi2i``, everything it finished except SemI2I's outputs is hard-linked into the new
run folder (copied where links fail), and the stages skip on it as on a resumed run (main Dubai pair, quick
profile: 939 s for such a run, SemI2I's training 735 s of it, against ~30 min for a whole run). Anything else differing is refused in one line naming the key, and
:mod:`semi2i.preflight` then checks the linked stores against the inputs as on any resume. The code version is
not compared: reuse outputs of the same code.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from semi2i.config import ConfigError

log = logging.getLogger(__name__)

#: the resolved config's keys whose difference leaves the other run's non-SemI2I outputs valid
_FREE_KEYS = {"name", "methods", "overrides", "resolved_profile.semi2i"}
#: never taken: what the new run writes itself (its config, the comparison, logs, Ray Train's run state)
_NOT_REUSED = {"config.resolved.yaml", "report.json", "report.md", "previews", "tensorboard", "ray", "semi2i_choice.json"}


def config_difference(mine: dict, theirs: dict, prefix: str = "") -> str | None:
    """The first dotted key where the two resolved configs differ outside SemI2I's settings (None: none)."""
    for key in sorted(set(mine) | set(theirs)):
        dotted = f"{prefix}{key}"
        if dotted in _FREE_KEYS:
            continue
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = config_difference(a, b, f"{dotted}.")
            if found:
                return found
        elif a != b:
            return f"{dotted} is {b!r} there, {a!r} here"
    return None


_SEMI2I_NAME = re.compile(r"^(unet_)?semi2i(_seed\d+)?(\.\w+)?$")


def is_semi2i_output(name: str) -> bool:
    """A run-folder entry SemI2I's settings decide: its checkpoints, fine-tuned U-nets, stylized source, maps,
    scores (``semi2i``, ``semi2i_seed<k>``, with ``unet_`` and an extension or not)."""
    return bool(_SEMI2I_NAME.match(name))


def reuse_outputs(other: str | Path, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    """Link ``other``'s finished non-SemI2I outputs into ``run_dir`` (never over an existing entry); returns
    the linked entries. Raises :class:`ConfigError` when ``other`` is not a run folder of the same setting."""
    other = Path(other)
    config = other / "config.resolved.yaml"
    if not config.is_file():
        raise ConfigError(f"--reuse-from {other}: no config.resolved.yaml there (not an adapt run folder)")
    if other.resolve() == run_dir.resolve():
        raise ConfigError(f"--reuse-from {other}: that is this run's own folder")
    differs = config_difference(resolved, yaml.safe_load(config.read_text()) or {})
    if differs:
        raise ConfigError(f"--reuse-from {other}: {differs}; only the semi2i settings, the methods and the name may "
                          "differ (its source U-net and baselines would not be this run's)")
    linked = []
    for entry in _entries(other):
        relative = entry.relative_to(other)
        target = run_dir / relative
        if target.exists() or any(is_semi2i_output(part) for part in relative.parts):
            continue
        _link(entry, target)
        linked.append(str(relative))
    log.info("reused from %s: %s", other, ", ".join(linked) if linked else "nothing (no finished outputs there)")
    return linked


def _entries(run: Path) -> list[Path]:
    """The finished outputs of a run folder: top-level files, the entries one level into its folders
    (stores/<city>.zarr, stylized/<method>, maps/<method>, scores/<method>.json,
    label_free/<method>.json, guard/<method>.json with a fine-tune it averaged away) and the synthetic demo's
    data/; hidden names are unfinished."""
    entries = []
    for item in sorted(run.iterdir()):
        if item.name in _NOT_REUSED or item.name.startswith("."):
            continue
        if item.is_dir() and item.name == "data":  # the synthetic demo's generated inputs
            entries.append(item)
        elif item.is_dir() and item.name in ("stores", "stylized", "maps", "scores", "label_free", "guard"):
            entries += [sub for sub in sorted(item.iterdir()) if not sub.name.startswith(".") and _finished(sub)]
        elif item.is_file():
            entries.append(item)
    return entries


def _finished(entry: Path) -> bool:
    """Stores, stylized sources and maps are published last by their commit file; anything else is a file."""
    if entry.is_file():
        return True
    return any((entry / name).exists() for name in ("zarr.json", "store.zarr/zarr.json", "job.json"))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.reuse-{os.getpid()}")
    if src.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, copy_function=link_or_copy)
    else:
        tmp.unlink(missing_ok=True)
        link_or_copy(src, tmp)
    os.replace(tmp, dst)


def link_or_copy(src: Any, dst: Any) -> Any:
    """A hard link (no bytes copied, same file), or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
