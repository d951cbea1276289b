"""A sweep's settings: the optional ``tune:`` section of an adapt config (:class:`TuneSettings`), read
and checked with the adapt part (:func:`load_sweep_config`; every problem is reported at once), and the
search keys (λ1-λ5, decay epoch) with their default ranges."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from semi2i.config import ConfigError
from semi2i.adapt_config import AdaptConfig, load_adapt_config, read_config_file

LAMBDAS = ("lambda_cross", "lambda_self", "lambda_grad", "lambda_adv", "lambda_tone")  # λ1..λ4, our λ5
SEARCH_KEYS = (*LAMBDAS, "decay_epoch")
#: log-uniform ranges around the paper's values (10, 10, 10, 1); decay_epoch defaults to [0, epochs];
#: lambda_tone is searched only when the sweep's space names it (else the profile's value is kept)
DEFAULT_SPACE: dict[str, Any] = {"lambda_cross": [1.0, 100.0], "lambda_self": [1.0, 100.0], "lambda_grad": [1.0, 100.0],
                                 "lambda_adv": [0.1, 10.0], "decay_epoch": None}
METRICS = ("miou", "proxy")


@dataclass(frozen=True)
class TuneSettings:
    num_samples: int = 8
    metric: str = "auto"  # auto: miou when the target has labels, else proxy
    max_concurrent_trials: int | None = None  # None: as many as fit (plan_concurrency)
    driver_cpus: float = 1.0  # the trial function (stylize, segment, score run here)
    driver_gpus: float = 0.0  # > 0: the driver stylizes and segments on its GPU share
    epochs_per_rung: int = 1  # SemI2I epochs between two reports (one ASHA iteration)
    grace_period: int = 1  # rungs before ASHA may stop a trial
    reduction_factor: float = 2.0
    finetune_steps: int | None = None  # U-net fine-tune steps per rung (None: the profile's unet.finetune_steps)
    stylize_rasters: int | None = 16  # source rasters stylized per rung, evenly spread (None: all)
    space: dict = field(default_factory=dict)  # key: [low, high] or a fixed value; missing keys: DEFAULT_SPACE
    points_to_evaluate: list | None = None  # None: the profile's own values first (the reference trial)
    seed: int | None = None  # search seed (None: the adapt config's seed)
    max_failures: int = 1  # retries of a failed trial (from its last rung)


_TUNE_KEYS = {f.name for f in dataclasses.fields(TuneSettings)}


def split_config(path: str | Path | None) -> tuple[dict, dict]:
    """(adapt part, tune part) of a config file; ``None`` is the built-in demo (no tune part)."""
    if path is None:
        return {"name": "demo", "synthetic": {}}, {}
    data = read_config_file(path)
    tune_part = data.pop("tune", None) or {}
    if not isinstance(tune_part, dict):
        raise ConfigError(f"{path}: 'tune' must be a mapping of sweep settings")
    data.setdefault("name", Path(path).stem)
    return data, tune_part


def load_sweep_config(path: str | Path | None, *, tune_overrides: Mapping[str, Any] | None = None,
                      **adapt_overrides: Any) -> tuple[AdaptConfig, TuneSettings]:
    """Read an adapt config with an optional ``tune:`` section; every problem is reported at once.

    The adapt part goes through :func:`load_adapt_config` unchanged (``adapt_overrides``: profile, seed,
    workers, gpu); ``tune_overrides`` (command-line values, None = keep) go over the tune section.
    """
    adapt_part, tune_part = split_config(path)
    tune_part = {**tune_part, **{k: v for k, v in (tune_overrides or {}).items() if v is not None}}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as d:  # relative paths resolve from the repo root, not the file
        tmp = Path(d) / "adapt.yaml"
        tmp.write_text(yaml.safe_dump(adapt_part, sort_keys=False))
        try:
            cfg = load_adapt_config(tmp, **{k: v for k, v in adapt_overrides.items() if v is not None})
        except ConfigError as exc:
            cfg = None
            errors.append(str(exc).replace(str(tmp), str(path)))
    settings = _tune_settings(tune_part, cfg, str(path or "<built-in demo>"), errors)
    if errors:
        raise ConfigError("\n".join(errors))
    return cfg, settings


def _tune_settings(data: dict, cfg: AdaptConfig | None, origin: str, errors: list[str]) -> TuneSettings | None:
    for key in data:
        if key not in _TUNE_KEYS:
            errors.append(f"{origin}: unknown key 'tune.{key}' (known: {', '.join(sorted(_TUNE_KEYS))})")
    values = {k: v for k, v in data.items() if k in _TUNE_KEYS}

    def check(key: str, ok: Callable[[Any], bool], wanted: str) -> None:
        if key in values and not (values[key] is not None and not isinstance(values[key], bool) and ok(values[key])):
            if values[key] is None and key in {"max_concurrent_trials", "finetune_steps", "stylize_rasters", "seed",
                                              "points_to_evaluate"}:
                return
            errors.append(f"{origin}: 'tune.{key}' must be {wanted}, got {values[key]!r}")
            values.pop(key)

    is_int = lambda v: isinstance(v, int)  # noqa: E731
    check("num_samples", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    check("metric", lambda v: v in ("auto", *METRICS), f"one of auto, {', '.join(METRICS)}")
    check("max_concurrent_trials", lambda v: is_int(v) and v >= 1, "an integer >= 1 or null")
    check("driver_cpus", lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0")
    check("driver_gpus", lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0")
    check("epochs_per_rung", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    check("grace_period", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    check("reduction_factor", lambda v: isinstance(v, (int, float)) and v > 1, "a number > 1")
    check("finetune_steps", lambda v: is_int(v) and v >= 1, "an integer >= 1 or null")
    check("stylize_rasters", lambda v: is_int(v) and v >= 1, "an integer >= 1 or null")
    check("space", lambda v: isinstance(v, dict), "a mapping of search keys to [low, high] or a value")
    check("points_to_evaluate", lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v), "a list of mappings")
    check("seed", is_int, "an integer or null")
    check("max_failures", lambda v: is_int(v) and v >= 0, "an integer >= 0")
    for key in ("driver_cpus", "driver_gpus", "reduction_factor"):
        if key in values:
            values[key] = float(values[key])
    epochs = cfg.profile.semi2i.epochs if cfg is not None else 10**9  # unknown: the adapt part is reported
    space = {**DEFAULT_SPACE, "decay_epoch": [0, epochs], **(values.get("space") or {})}
    for key, value in space.items():
        where = f"{origin}: 'tune.space.{key}'"
        if key not in SEARCH_KEYS:
            errors.append(f"{where}: unknown search key (known: {', '.join(SEARCH_KEYS)})")
            continue
        is_range = isinstance(value, list)
        items = value if is_range else [value]
        if is_range and len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            errors.append(f"{where}: expected [low, high] or a fixed number, got {value!r}")
            continue
        if key == "decay_epoch":
            if not all(isinstance(v, int) and 0 <= v <= epochs for v in items):
                errors.append(f"{where}: decay epochs are integers in [0, epochs={epochs}], got {value!r}")
        elif is_range and not 0 < value[0] <= value[1]:
            errors.append(f"{where}: a log-uniform range needs 0 < low <= high, got {value!r}")
        elif not is_range and value < 0:
            errors.append(f"{where}: must be >= 0, got {value!r}")
        if is_range and key == "decay_epoch" and value[0] > value[1]:
            errors.append(f"{where}: low > high in {value!r}")
    values["space"] = space
    for point in values.get("points_to_evaluate") or []:
        unknown = set(point) - set(SEARCH_KEYS)
        if unknown:
            errors.append(f"{origin}: 'tune.points_to_evaluate' has unknown keys {sorted(unknown)} "
                          f"(known: {', '.join(SEARCH_KEYS)})")
    if cfg is None:
        return None
    settings = TuneSettings(**values)
    n_rungs = math.ceil(epochs / settings.epochs_per_rung)
    if settings.grace_period > n_rungs:
        errors.append(f"{origin}: 'tune.grace_period' {settings.grace_period} exceeds the {n_rungs} rungs "
                      f"(semi2i.epochs={epochs} / epochs_per_rung={settings.epochs_per_rung})")
    return settings
