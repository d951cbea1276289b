"""The adapt run's configuration: the YAML file (cities, classes, methods, profile + overrides, run
settings) read and validated once against its schema (:class:`AdaptFile`, pydantic through
:mod:`semi2i.schema`), every problem reported at once with the file it came from.

Shared with the multi-city run (:mod:`semi2i.multicity`) and the Tune sweep (:mod:`semi2i.tuning`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Callable

import yaml
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from semi2i.config import ConfigError, Profile, load_profile, merge_overrides
from semi2i.schema import Bool, Float, Int, PosInt, Str, relations, rule, settings, suggest, validate

#: the source checkout this package runs from, when it does (``pip install -e .``, the cluster image's /app)
REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "unet_source", "colormapgan", "cyclegan", "semi2i", "stylize", "finetune", "segment", "report")
#: stages that train a model from the ingested cities alone: run side by side (semi2i.trainings)
TRAINING_STAGES = ("unet_source", "colormapgan", "cyclegan", "semi2i")
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


def shape(test: Callable[[Any], bool], message: str) -> BeforeValidator:
    """A value's shape checked before its type, so a wrong one gets ``message`` rather than pydantic's."""

    def check(value: Any) -> Any:
        if not test(value):
            raise PydanticCustomError("config", "{text}", {"text": message.format(v=value)})
        return [value] if isinstance(value, str) else value

    return BeforeValidator(check)


def _strings(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


Paths = Annotated[list[Str], shape(_strings, "must be a path/glob or a list of them")]
Classes = Annotated[list[Str], shape(lambda v: isinstance(v, list) and bool(v) and _strings(v),
                                     "must be a non-empty list of class names")]
Methods = Annotated[list[Str], shape(lambda v: isinstance(v, list) and all(m in METHODS for m in v),
                                     f"must be a list from {list(METHODS)}, got {{v}}")]
Workers = Annotated[Int, rule(lambda v: v >= 1, "must be >= 1")]
#: who reads the training patches (semi2i.training.step_data): Ray Data on spare CPUs, the workers' threads, or auto
DATA_PLANES = ("auto", "ray_data", "worker")
DataPlaneName = Annotated[Str, rule(lambda v: v in DATA_PLANES, f"must be one of {list(DATA_PLANES)}")]
#: a run's name names its folder: YAML's ``name: 2024`` is the name "2024"
Name = Annotated[Str, BeforeValidator(lambda v: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)]


@settings
class CityFile:
    """A city as the YAML gives it: images (and labels, a palette for colour masks or a class list)."""

    images: Paths
    name: Str | None = None
    labels: Paths | None = None
    palette: Str | None = None
    classes: Str | None = None
    nodata: Float | None = None

    def __post_init__(self) -> None:
        relations([": takes either palette (colour masks) or classes (index labels), not both"]
                  if self.palette and self.classes else [])


@settings
class SyntheticFile:
    """The built-in synthetic cities' knobs (semi2i.demo)."""

    size: PosInt | None = None
    rasters: PosInt | None = None
    seed: Int | None = None


@settings
class RunFile:
    """What every run config holds (the adapt and multi-city files)."""

    name: Name
    profile: Str = "quick"
    overrides: dict[Str, Any] = dataclasses.field(default_factory=dict)
    classes: Classes | None = None
    seed: Int = 0
    workers: Workers = 1
    gpu: Bool = False
    data_plane: DataPlaneName = "auto"
    synthetic: SyntheticFile | None = None


@settings
class AdaptFile(RunFile):
    """An adapt config file: a source city with labels, a target city, the methods to compare."""

    source: CityFile | None = None
    target: CityFile | None = None
    methods: Methods = dataclasses.field(default_factory=lambda: list(METHODS))
    #: SemI2I's chain of stages beside the other methods' where the cluster has room (semi2i.lanes)
    lanes: Bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.synthetic is None:
            for role, city in (("source", self.source), ("target", self.target)):
                if city is None:
                    problems.append(f"{role}: is required (a mapping with images, and labels, palette or classes)")
            if self.source is not None and self.source.labels is None:
                problems.append("source.labels: is required (the source's labels train the U-net)")
            if self.classes is None:
                problems.append("classes: must be a non-empty list of class names")
        relations(problems)


def file_lines(origin: str) -> dict:
    """How a run config's problems read: ``<file>: '<dotted.key>' <what is wrong>``."""

    def line(path: str, message: str) -> str:
        message = "is required" if message == "missing (required)" else message
        message = f"must be {message[len('expected '):]}" if message.startswith("expected ") else message
        return f"{origin}: '{path}' {message}"

    return {"unknown": lambda path, known: f"{origin}: unknown key '{path}' {suggest(path.rsplit('.', 1)[-1], known)}",
            "line": line}


@settings
class CitySpec:
    """A city with its paths resolved (local paths absolute, URLs as they are)."""

    name: Str
    images: list[Str]
    labels: list[Str] | None = None
    palette: Str | None = None
    classes: Str | None = None
    nodata: Float | None = None


@dataclasses.dataclass(frozen=True)
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
    data_plane: str = "auto"
    synthetic: dict | None = None
    raw: dict = dataclasses.field(default_factory=dict)
    lanes: bool = True


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
    if path is None:
        return adapt_config_from_dict({"name": "demo", "synthetic": {}, **DEMO_SETTINGS}, "<built-in demo>",
                                      profile=profile, seed=seed, workers=workers, gpu=gpu)
    data = read_config_file(path)
    data.setdefault("name", Path(path).stem)
    return adapt_config_from_dict(data, str(path), profile=profile, seed=seed, workers=workers, gpu=gpu)


def adapt_config_from_dict(data: dict, origin: str, *, profile: str | None = None, seed: int | None = None,
                           workers: int | None = None, gpu: bool | None = None) -> AdaptConfig:
    """An adapt config from its mapping (``origin`` names it in messages); command-line values win."""
    raw = dict(data)
    data = {**data, **{k: v for k, v in (("seed", seed), ("workers", workers), ("gpu", gpu)) if v is not None}}
    if profile is not None:
        data["profile"] = profile
    checked, errors = validate(AdaptFile, data, **file_lines(origin))
    prof = config_profile(data, origin, errors)
    if checked is None or errors:
        raise ConfigError("\n".join(errors))
    prior, classes = prof.semi2i.target_class_prior, list(checked.classes or DEMO_CLASSES)
    if prior is not None and (len(prior) != len(classes) or sum(prior) <= 0):
        raise ConfigError(f"{origin}: semi2i.target_class_prior: needs one share per class ({len(classes)}: "
                          f"{', '.join(classes)}) with a positive sum, got {list(prior)}")
    if checked.synthetic is not None:
        source, target = CitySpec("demo_source", []), CitySpec("demo_target", [])
    else:
        source, target = (city_spec(c, role, origin, errors) for c, role in ((checked.source, "source"), (checked.target, "target")))
    if errors:
        raise ConfigError("\n".join(errors))
    methods = checked.methods
    if checked.synthetic is None and target.labels is None:
        methods = [m for m in methods if m != "target_oracle"]  # no target labels: no oracle (and no scores)
    return AdaptConfig(name=checked.name, source=source, target=target, classes=list(checked.classes or DEMO_CLASSES),
                       profile=prof, methods=tuple(methods), seed=checked.seed, workers=checked.workers, gpu=checked.gpu,
                       data_plane=checked.data_plane, synthetic=data.get("synthetic"), raw=raw, lanes=checked.lanes)


def config_profile(data: dict, origin: str, errors: list[str]) -> Profile | None:
    """The settings profile (``data["profile"]``, else quick) with the file's ``overrides``; None with the
    problem appended to ``errors``."""
    name, overrides = data.get("profile", "quick"), data.get("overrides") or {}
    if not isinstance(name, str) or not isinstance(overrides, dict):
        return None  # the schema reports these
    seeded = [f"{section}.seed" for section, keys in merge_overrides({}, overrides).items()
              if isinstance(keys, dict) and "seed" in keys]
    if seeded:  # the run's models all take the run's seed: a per-model seed here would be silently ignored
        errors.append(f"{origin}: overrides {', '.join(seeded)}: a run's models take the run's seed (`seed:` or "
                      "--seed); for other SemI2I generators use semi2i.seeds: K (seeds seed + 1000 k)")
        return None
    try:
        return load_profile(name, overrides)
    except ConfigError as exc:
        errors.append(f"{origin}: {exc}")
        return None


def city_spec(city: CityFile, role: str, origin: str, errors: list[str]) -> CitySpec:
    """``city`` with its paths resolved; a palette or class list that is not there is appended to ``errors``."""
    from semi2i import io_paths

    def one(value: str | None, key: str) -> str | None:
        if value is None:
            return None
        path = resolve(value)
        try:
            if not io_paths.exists(path):
                errors.append(f"{origin}: '{role}.{key}' file not found: {path}")
        except RuntimeError as exc:  # no fsspec backend for this URL scheme
            errors.append(f"{origin}: '{role}.{key}': {exc}")
        return str(path)

    return CitySpec(name=city.name or role, images=[str(resolve(v)) for v in city.images],
                    labels=None if city.labels is None else [str(resolve(v)) for v in city.labels],
                    palette=one(city.palette, "palette"), classes=one(city.classes, "classes"), nodata=city.nodata)


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
