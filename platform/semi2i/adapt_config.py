"""The adapt run's configuration: the YAML file (cities, classes, methods, profile + overrides, run
settings) read and validated once, every problem reported at once with the file it came from.

Shared with the multi-city run (:mod:`semi2i.multicity`) and the Tune sweep (:mod:`semi2i.tuning`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from semi2i.config import ConfigError, Profile, load_profile

#: the source checkout this package runs from, when it does (``pip install -e .``, the cluster image's /app)
REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "unet_source", "colormapgan", "cyclegan", "semi2i", "stylize", "finetune", "segment", "report")
#: methods whose U-net is the source model fine-tuned on the stylizer's output
STYLIZED_METHODS = ("histogram_matching", "gray_world", "colormapgan", "cyclegan", "semi2i")
#: stylizers that map each band onto itself: skipped when source and target band counts differ
PER_BAND_METHODS = ("histogram_matching", "gray_world", "colormapgan")
#: stylizers trained on both cities; their training stage writes ``<method>.pt`` into the run folder
GAN_METHODS = ("colormapgan", "cyclegan", "semi2i")
METHODS = ("source_only", *STYLIZED_METHODS, "target_oracle")
#: the classes of the built-in synthetic demos (what their classes.json holds)
DEMO_CLASSES = ["building", "road", "vegetation", "water", "land"]
#: What ``python jobs/adapt.py`` with no config runs (= jobs/configs/demo.yaml): the quick profile with a
#: smaller U-net budget and no CycleGAN, so the whole demo stays under ~10 minutes on 2 CPU cores (the
#: U-net trainings are most of its time: ~0.47 s per quick step). Real configs keep the full profile.
DEMO_SETTINGS = {
    "methods": ["source_only", "histogram_matching", "gray_world", "colormapgan", "semi2i", "target_oracle"],
    "overrides": {"unet": {"train_steps": 200, "finetune_steps": 60}},
}




@dataclass(frozen=True)
class CitySpec:
    name: str
    images: list[str]
    labels: list[str] | None = None
    palette: str | None = None
    classes: str | None = None
    nodata: float | None = None


@dataclass(frozen=True)
class AdaptConfig:
    name: str
    source: CitySpec
    target: CitySpec
    classes: list[str]
    profile: Profile
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    workers: int = 1
    gpu: bool = False
    synthetic: dict | None = None
    raw: dict = field(default_factory=dict)


_TOP_KEYS = {"name", "profile", "source", "target", "classes", "methods", "overrides", "seed", "workers", "gpu", "synthetic"}
_CITY_KEYS = {"name", "images", "labels", "palette", "classes", "nodata"}


def read_config_file(path: str | Path) -> dict:
    """A config file's top-level mapping, or a one-line ConfigError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_adapt_config(path: str | Path | None, *, profile: str | None = None, seed: int | None = None,
                      workers: int | None = None, gpu: bool | None = None) -> AdaptConfig:
    """Read and validate a YAML config; every problem is reported before any work starts.

    Relative paths resolve as :func:`config_root` says (the shipped configs' ``../shared/...`` works from anywhere).
    ``path=None`` is the built-in synthetic demo. Command-line values override the file's.
    """
    data, origin, errors = read_run_config(path, demo="demo", demo_origin="<built-in demo>", known_keys=_TOP_KEYS)
    if path is None:
        data.update(DEMO_SETTINGS)
    synthetic = data.get("synthetic")
    if synthetic is not None:
        classes_default: list[str] | None = list(DEMO_CLASSES)
        source = CitySpec("demo_source", [])
        target = CitySpec("demo_target", [])
    else:
        source = _city(data.get("source"), "source", origin, errors, require_labels=True)
        target = _city(data.get("target"), "target", origin, errors, require_labels=False)
        classes_default = None
    classes = config_classes(data, classes_default, origin, errors)
    methods = data.get("methods", list(METHODS))
    if not isinstance(methods, list) or any(m not in METHODS for m in methods):
        errors.append(f"{origin}: 'methods' must be a list from {list(METHODS)}, got {methods}")
    prof = config_profile(data, profile, origin, errors)
    values = run_settings(data, origin, errors, seed=seed, workers=workers, gpu=gpu)
    if synthetic is None and target is not None and target.labels is None and isinstance(methods, list):
        methods = [m for m in methods if m != "target_oracle"]  # no target labels: no oracle (and no scores)
    if errors:
        raise ConfigError("\n".join(errors))
    return AdaptConfig(
        name=str(data["name"]), source=source, target=target, classes=list(classes), profile=prof,
        methods=tuple(methods), seed=values["seed"], workers=values["workers"], gpu=values["gpu"],
        synthetic=synthetic, raw=data,
    )


def read_run_config(path: str | Path | None, *, demo: str, demo_origin: str, known_keys: set[str]) -> tuple[dict, str, list[str]]:
    """A run config's mapping (``path=None``: the built-in synthetic demo named ``demo``), the origin its
    messages name, and the errors found so far: unknown top-level keys, a bad ``synthetic`` block.
    Shared by the adapt and multi-city configs, so both read and word these alike."""
    if path is None:
        data: dict = {"name": demo, "synthetic": {}}
        origin = demo_origin
    else:
        origin = str(path)
        data = read_config_file(path)
        data.setdefault("name", Path(path).stem)
    errors = [f"{origin}: unknown key '{k}' (known: {', '.join(sorted(known_keys))})" for k in data if k not in known_keys]
    synthetic = data.get("synthetic")
    if synthetic is not None and (not isinstance(synthetic, dict) or set(synthetic) - {"size", "rasters", "seed"}):
        errors.append(f"{origin}: 'synthetic' takes size, rasters, seed")
    return data, origin, errors


def config_classes(data: dict, default: list[str] | None, origin: str, errors: list[str]) -> Any:
    """The config's ``classes`` (else ``default``); a bad value is appended to ``errors``."""
    classes = data.get("classes", default)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        errors.append(f"{origin}: 'classes' must be a non-empty list of class names")
    return classes


def config_profile(data: dict, profile: str | None, origin: str, errors: list[str]) -> Profile | None:
    """The settings profile (the command line's name, else the file's, else quick) with the file's
    ``overrides``; None with the problem appended to ``errors``."""
    try:
        return load_profile(profile or data.get("profile", "quick"), data.get("overrides") or {})
    except ConfigError as exc:
        errors.append(f"{origin}: {exc}")
        return None


def run_settings(data: dict, origin: str, errors: list[str], *, seed: int | None, workers: int | None,
                 gpu: bool | None) -> dict:
    """seed, workers, gpu: the command line's value, else the file's, else the default; bad types and
    values are appended to ``errors`` (shared by the adapt, tune and multi-city configs)."""
    values = {"seed": seed if seed is not None else data.get("seed", 0),
              "workers": workers if workers is not None else data.get("workers", 1),
              "gpu": gpu if gpu is not None else data.get("gpu", False)}
    for key, kind in (("seed", int), ("workers", int), ("gpu", bool)):
        if not isinstance(values[key], kind) or isinstance(values[key], bool) != (kind is bool):
            errors.append(f"{origin}: '{key}' must be {kind.__name__}, got {values[key]!r}")
    if isinstance(values["workers"], int) and values["workers"] < 1:
        errors.append(f"{origin}: 'workers' must be >= 1")
    return values


def _city(spec: Any, role: str, origin: str, errors: list[str], require_labels: bool) -> CitySpec | None:
    if not isinstance(spec, dict):
        errors.append(f"{origin}: '{role}' must be a mapping with images (and labels, palette/classes)")
        return None
    for key in spec:
        if key not in _CITY_KEYS:
            errors.append(f"{origin}: unknown key '{role}.{key}' (known: {', '.join(sorted(_CITY_KEYS))})")
    if "images" not in spec:
        errors.append(f"{origin}: '{role}.images' is required")
    if require_labels and "labels" not in spec:
        errors.append(f"{origin}: '{role}.labels' is required (the source's labels train the U-net)")
    if spec.get("palette") and spec.get("classes"):
        errors.append(f"{origin}: '{role}' takes either palette (colour masks) or classes (index labels), not both")

    def paths(value: Any, key: str) -> list[str] | None:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            errors.append(f"{origin}: '{role}.{key}' must be a path/glob or a list of them")
            return None
        return [str(resolve(v)) for v in items]

    def one(value: Any, key: str) -> str | None:
        if value is None:
            return None
        from semi2i import io_paths

        path = resolve(value)
        try:
            found = io_paths.exists(path)
        except RuntimeError as exc:  # no fsspec backend for this URL scheme
            errors.append(f"{origin}: '{role}.{key}': {exc}")
            return str(path)
        if not found:
            errors.append(f"{origin}: '{role}.{key}' file not found: {path}")
        return str(path)

    return CitySpec(
        name=str(spec.get("name", role)),
        images=paths(spec.get("images"), "images") or [],
        labels=paths(spec.get("labels"), "labels"),
        palette=one(spec.get("palette"), "palette"),
        classes=one(spec.get("classes"), "classes"),
        nodata=spec.get("nodata"),
    )


def config_root() -> Path:
    """Where a config's relative paths start: the repository root when the package runs from a source
    checkout (so a config means the same files from any folder, and under ``ray job submit --working-dir``,
    whose working folder is a temporary copy), else the current folder (a plain ``pip install``, where the
    package's own folder is site-packages)."""
    checkout = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "platform" / "semi2i").is_dir()
    return REPO_ROOT if checkout else Path.cwd()


def resolve(path: str | Path) -> Path | str:
    """A config's path: relative ones from :func:`config_root`; object-store URLs (s3://, gs://, az://,
    https://) stay URLs (a str) and are read through GDAL/fsspec (see semi2i.io_paths)."""
    from semi2i import io_paths

    return io_paths.resolve(path, config_root())
