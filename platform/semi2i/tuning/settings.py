"""A sweep's settings: the optional ``tune:`` section of an adapt config (:class:`TuneSettings`, a schema
of :mod:`semi2i.schema`), read and checked with the adapt part (:func:`load_sweep_config`; every problem is
reported at once), and the search keys (λ1-λ5, decay epoch) with their default ranges."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any, Mapping

from semi2i.adapt_config import AdaptConfig, adapt_config_from_dict, file_lines, read_config_file
from semi2i.config import ConfigError
from semi2i.schema import Float, Int, NonNegInt, PosInt, Str, one_of, rule, settings, validate

LAMBDAS = ("lambda_cross", "lambda_self", "lambda_grad", "lambda_adv", "lambda_tone")  # λ1..λ4, our λ5
SEARCH_KEYS = (*LAMBDAS, "decay_epoch")
#: log-uniform ranges around the paper's values (10, 10, 10, 1); decay_epoch defaults to [0, epochs];
#: lambda_tone is searched only when the sweep's space names it (else the profile's value is kept)
DEFAULT_SPACE: dict[str, Any] = {"lambda_cross": [1.0, 100.0], "lambda_self": [1.0, 100.0], "lambda_grad": [1.0, 100.0],
                                 "lambda_adv": [0.1, 10.0], "decay_epoch": None}
METRICS = ("miou", "label_free", "proxy")


NonNegFloat = Annotated[Float, rule(lambda v: v >= 0, "must be a number >= 0, got {v!r}")]


@settings
class TuneSettings:
    num_samples: PosInt = 8
    metric: Annotated[Str, one_of(("auto", *METRICS))] = "auto"  # auto: miou when the target has labels, else label_free
    max_concurrent_trials: PosInt | None = None  # None: as many as fit (plan_concurrency)
    driver_cpus: NonNegFloat = 1.0  # the trial function (stylize, segment, score run here)
    driver_gpus: NonNegFloat = 0.0  # > 0: the driver stylizes and segments on its GPU share
    epochs_per_rung: PosInt = 1  # SemI2I epochs between two reports (one ASHA iteration)
    grace_period: PosInt = 1  # rungs before ASHA may stop a trial
    reduction_factor: Annotated[Float, rule(lambda v: v > 1, "must be a number > 1, got {v!r}")] = 2.0
    finetune_steps: PosInt | None = None  # U-net fine-tune steps per rung (None: the profile's unet.finetune_steps)
    stylize_rasters: PosInt | None = 16  # source rasters stylized per rung, evenly spread (None: all)
    space: dict[Str, Any] = dataclasses.field(default_factory=dict)  # key: [low, high] or a fixed value; missing keys: DEFAULT_SPACE
    points_to_evaluate: list[dict[Str, Any]] | None = None  # None: the profile's own values first (the reference trial)
    seed: Int | None = None  # search seed (None: the adapt config's seed)
    max_failures: NonNegInt = 1  # retries of a failed trial (from its last rung)


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

    The adapt part goes through :func:`adapt_config_from_dict` unchanged (``adapt_overrides``: profile,
    seed, workers, gpu); ``tune_overrides`` (command-line values, None = keep) go over the tune section.
    """
    adapt_part, tune_part = split_config(path)
    tune_part = {**tune_part, **{k: v for k, v in (tune_overrides or {}).items() if v is not None}}
    origin = str(path or "<built-in demo>")
    errors: list[str] = []
    try:
        cfg = adapt_config_from_dict(adapt_part, origin, **adapt_overrides)
    except ConfigError as exc:
        cfg = None
        errors.append(str(exc))
    settings = _tune_settings(tune_part, cfg, origin, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    return cfg, settings


def _tune_settings(data: dict, cfg: AdaptConfig | None, origin: str, errors: list[str]) -> TuneSettings | None:
    lines = file_lines(origin)
    settings, problems = validate(TuneSettings, data, unknown=lambda p, known: lines["unknown"](f"tune.{p}", known),
                                  line=lambda p, message: lines["line"](f"tune.{p}", message))
    errors += problems
    epochs = cfg.profile.semi2i.epochs if cfg is not None else 10**9  # unknown: the adapt part is reported
    space = {**DEFAULT_SPACE, "decay_epoch": [0, epochs], **(data.get("space") if isinstance(data.get("space"), dict) else {})}
    errors += _space_problems(space, epochs, origin)
    for point in (settings.points_to_evaluate if settings is not None else None) or []:
        unknown = set(point) - set(SEARCH_KEYS)
        if unknown:
            errors.append(f"{origin}: 'tune.points_to_evaluate' has unknown keys {sorted(unknown)} "
                          f"(known: {', '.join(SEARCH_KEYS)})")
    if cfg is None or settings is None:
        return None
    settings = dataclasses.replace(settings, space=space)
    n_rungs = math.ceil(epochs / settings.epochs_per_rung)
    if settings.grace_period > n_rungs:
        errors.append(f"{origin}: 'tune.grace_period' {settings.grace_period} exceeds the {n_rungs} rungs "
                      f"(semi2i.epochs={epochs} / epochs_per_rung={settings.epochs_per_rung})")
    return settings


def _space_problems(space: dict, epochs: int, origin: str) -> list[str]:
    """The search space: known keys, log-uniform ranges, decay epochs inside the schedule."""
    errors = []
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
    return errors
