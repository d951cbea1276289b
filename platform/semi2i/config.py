"""Typed run configuration and the named profiles (``paper``, ``quick``) loaded from YAML.

Profiles are data: ``semi2i/profiles/<name>.yaml``. Everything downstream receives these frozen
dataclasses, so values are validated once, here at the edge, and every bad key is reported with its
dotted path in one :class:`ConfigError` (not one crash per run attempt).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml


#: SemI2I generator layouts (``semi2i.style_path``; :mod:`semi2i.models.semi2i` explains them).
STYLE_PATHS = ("normalised", "carried")


class ConfigError(ValueError):
    """A profile or an override is invalid; the message lists every bad key on its own line."""


@dataclass(frozen=True)
class SemI2IConfig:
    """SemI2I model and training settings (paper §2-3). Defaults are the paper's values.

    ``lambda_cross``, ``lambda_self``, ``lambda_grad``, ``lambda_adv`` are λ1..λ4 of Eq. 1-2.
    ``in_bands_a``/``in_bands_b`` depend on the data, so the pipeline sets them at run time with
    :func:`dataclasses.replace`; profiles leave them out.
    """

    in_bands_a: int = 3
    in_bands_b: int = 3
    base_width: int = 64  # encoder widths w, 2w, 4w (DESIGN: 64-128-256)
    n_res_blocks: int = 4  # not given by the paper; 4 as in MUNIT's AdaIN content encoder
    disc_width: int = 64  # PatchGAN ndf
    patch_size: int = 256  # training patch side, one patch per domain per step
    lambda_cross: float = 10.0  # λ1
    lambda_self: float = 10.0  # λ2
    lambda_grad: float = 10.0  # λ3
    lambda_adv: float = 1.0  # λ4
    lambda_tone: float = 0.0  # λ5, ours (losses.tone_correlation): keeps regional brightness order; 0 = paper
    d_rate: float = 0.95  # Algorithm 1 decay rate
    adain_eps: float = 1e-5
    style_path: str = "normalised"  # where μ, σ come from: models.semi2i.STYLE_PATHS ("carried" = ours)
    ema_decay: float = 0.0  # stylize with an EMA of the generator weights (ours; 0 = the last iterate, paper)
    seeds: int = 1  # jobs/adapt.py trains this many generators and picks one without labels (semi2i_seeds)
    lr: float = 1e-3
    beta1: float = 0.5  # Adam betas as in CycleGAN (the paper only says "Adam")
    beta2: float = 0.999
    epochs: int = 25
    decay_epoch: int = 15
    max_steps_per_epoch: int | None = None  # cap on min(#A, #B) for time-boxed runs; None = paper
    checkpoint_every: int = 1000  # steps
    preview_every: int = 500  # steps
    log_every: int = 50  # steps (log line + TensorBoard scalars)
    seed: int = 0

    @property
    def lambdas(self) -> tuple[float, float, float, float]:
        return (self.lambda_cross, self.lambda_self, self.lambda_grad, self.lambda_adv)


@dataclass(frozen=True)
class ColorMapGANConfig:
    """ColorMapGAN baseline (Tasar et al., arXiv 1907.12859): a per-band, per-value affine colour map
    trained adversarially against the target with a 70×70 PatchGAN (LSGAN), source → target only.

    The paper's generator holds one (w, b) per band for every 8-bit RGB colour triple (a 256³ lookup
    table, ~100 M parameters); ours is the per-band factorised form, one (w, b) per band and per input
    value: ``out_c = w[c, v]·x_c + b[c, v]`` with ``v`` the bin of x_c (``bins`` levels of the [-1, 1]
    GAN input). It works for any band count and dtype (16-bit, float, 4+ bands, where a joint table
    would be 65536^bands) in a few KB. ``in_bands_a``/``in_bands_b`` are set by the pipeline and must
    be equal: a pointwise map has no band correspondence otherwise. Schedule: constant ``lr_g``/``lr_d``
    up to ``decay_epoch``, then CycleGAN's linear decay (our choice; the GAN setup follows CycleGAN's).
    """

    in_bands_a: int = 3
    in_bands_b: int = 3
    bins: int = 256  # LUT entries per band (8-bit data: one per value)
    disc_width: int = 64  # PatchGAN ndf
    patch_size: int = 256
    lr_g: float = 5e-3  # the map's learning rate: each entry only learns from the pixels in its bin
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs: int = 25
    decay_epoch: int = 15
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 1000
    preview_every: int = 500
    log_every: int = 50
    seed: int = 0


@dataclass(frozen=True)
class CycleGANConfig:
    """CycleGAN baseline (Zhu et al. 2017), defaults of the reference implementation
    (pytorch-CycleGAN-and-pix2pix): ResNet generators c7s1-w, d2w, d4w, ``n_res_blocks``×R4w, u2w, uw,
    c7s1; 70×70 PatchGANs; LSGAN; λ_cycle = 10, identity 0.5·λ_cycle (only with equal band counts);
    image pools of 50; Adam 2e-4, β = (0.5, 0.999); constant for ``decay_epoch`` epochs, then linear
    decay to ~0 (100 + 100 epochs). An epoch is min(#A, #B) patches, as for SemI2I."""

    in_bands_a: int = 3
    in_bands_b: int = 3
    base_width: int = 64  # ngf
    n_res_blocks: int = 9  # 9 for 256² in the reference (6 for 128²)
    disc_width: int = 64  # ndf
    patch_size: int = 256
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # × lambda_cycle
    pool_size: int = 50  # 0 = no pool
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs: int = 200
    decay_epoch: int = 100
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 1000
    preview_every: int = 500
    log_every: int = 50
    seed: int = 0


#: Learning-rate schedules a U-net fine-tune may use (``UNetTrainConfig.finetune_lr_schedule``).
FINETUNE_LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class UNetTrainConfig:
    """U-net training and fine-tuning budget (paper §3). Defaults are the paper's values."""

    base_width: int = 64
    depth: int = 4
    patch_size: int = 256
    batch_size: int = 32
    train_steps: int = 8000
    finetune_steps: int = 2500
    lr: float = 1e-4
    # Learning rate over a fine-tune: "constant" (the paper) or "cosine" (decayed from ``lr`` towards 0, so
    # the fine-tuned weights are not at the mercy of the last few batches; see docs/adaptation-study.md).
    finetune_lr_schedule: str = "constant"


@dataclass(frozen=True)
class Profile:
    """A named set of settings. ``patch_size``/``overlap`` is the grid that cuts city rasters into
    patches (paper: 256 with overlap 32); the stylizers tile whole rasters with the same overlap."""

    name: str
    patch_size: int
    overlap: int
    semi2i: SemI2IConfig = field(default_factory=SemI2IConfig)
    unet: UNetTrainConfig = field(default_factory=UNetTrainConfig)
    colormapgan: ColorMapGANConfig = field(default_factory=ColorMapGANConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)


PROFILE_DIR = "profiles"


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    folder = resources.files("semi2i") / PROFILE_DIR
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load a shipped profile by name (``"paper"``, ``"quick"``) or a YAML file by path.

    ``overrides`` is merged on top before validation; keys may be nested dicts
    (``{"semi2i": {"lr": 2e-4}}``) or dotted paths (``{"semi2i.lr": 2e-4}``), which is what a
    sweep or a CLI passes.
    """
    raw, origin = _read_yaml(name_or_path)
    merged = _deep_merge(raw, _expand_dotted(dict(overrides or {})))
    return profile_from_dict(merged, origin=origin)


def profile_from_dict(data: Mapping[str, Any], origin: str = "<dict>") -> Profile:
    """Validate a plain mapping into a :class:`Profile`, collecting every error before raising."""
    errors: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: a profile must be a mapping, got {type(data).__name__}")
    sections = {"semi2i": SemI2IConfig, "unet": UNetTrainConfig, "colormapgan": ColorMapGANConfig,
                "cyclegan": CycleGANConfig}
    top_fields = {f.name: f for f in dataclasses.fields(Profile)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top_fields:
            errors.append(_unknown(str(key), top_fields))
        elif key in sections:
            if not isinstance(value, Mapping):
                errors.append(f"{key}: expected a mapping of settings, got {type(value).__name__}")
                continue
            values[key] = _build(sections[key], value, key, errors)
        elif _check(key, value, _hints(Profile)[key], errors):
            values[key] = _coerce(value, _hints(Profile)[key])
    missing = [k for k in ("name", "patch_size", "overlap") if k not in data]
    errors.extend(f"{k}: missing (required)" for k in missing)
    if missing or len(values) < len({*data} & {*top_fields}):
        raise ConfigError(f"invalid profile {origin}:\n" + "\n".join(f"  - {e}" for e in errors))
    profile = Profile(**values)
    # Range and consistency checks on the values that passed the type checks (bad ones were
    # replaced by defaults above, so report only keys not already reported).
    flagged = {e.split(":", 1)[0] for e in errors}
    errors.extend(e for e in _cross_checks(profile) if e.split(":", 1)[0] not in flagged)
    if errors:
        raise ConfigError(f"invalid profile {origin}:\n" + "\n".join(f"  - {e}" for e in errors))
    return profile


# --- validation internals ---------------------------------------------------------------------
_POSITIVE_INTS = {
    "patch_size", "base_width", "n_res_blocks", "disc_width", "epochs", "checkpoint_every",
    "preview_every", "log_every", "in_bands_a", "in_bands_b", "depth", "batch_size",
    "train_steps", "max_steps_per_epoch", "bins",
}


def _build(cls: type, data: Mapping[str, Any], prefix: str, errors: list[str]) -> Any:
    """The section's dataclass from the keys that pass their checks (the others are reported)."""
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}"
        if key not in known:
            errors.append(_unknown(path, known))
        elif _check(path, value, hints[key], errors):
            kwargs[key] = _coerce(value, hints[key])
    return cls(**kwargs)


def _options(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def _check(path: str, value: Any, hint: Any, errors: list[str]) -> bool:
    """Type- and sign-check one value against its annotation; ints are accepted where floats are."""
    options = _options(hint)
    if value is None and type(None) in options:
        return True
    if isinstance(value, bool):  # YAML's true/false is never a number here
        matches = False
    else:
        matches = any(
            (kind is float and isinstance(value, (int, float))) or (kind in (int, str) and isinstance(value, kind))
            for kind in options
        )
    if not matches:
        wanted = " or ".join("null" if k is type(None) else k.__name__ for k in options)
        errors.append(f"{path}: expected {wanted}, got {type(value).__name__} {value!r}")
        return False
    if path.rsplit(".", 1)[-1] in _POSITIVE_INTS and isinstance(value, int) and value <= 0:
        errors.append(f"{path}: must be > 0, got {value}")
        return False
    return True


def _coerce(value: Any, hint: Any) -> Any:
    if float in _options(hint) and isinstance(value, int):
        return float(value)
    return value


def _cross_checks(p: Profile) -> list[str]:
    s, u, errs = p.semi2i, p.unet, []
    if not 0 <= p.overlap < p.patch_size:
        errs.append(f"overlap: must be in [0, patch_size={p.patch_size}), got {p.overlap}")
    for section, size in (("semi2i", s.patch_size), ("unet", u.patch_size)):
        if size > p.patch_size:
            errs.append(f"{section}.patch_size: {size} exceeds the patch grid size {p.patch_size}")
    if s.patch_size % 4:
        errs.append(f"semi2i.patch_size: must be divisible by 4 (two stride-2 convs), got {s.patch_size}")
    if s.patch_size < 32:
        errs.append(f"semi2i.patch_size: the 70x70 PatchGAN needs at least 32, got {s.patch_size}")
    if not 0 <= s.decay_epoch <= s.epochs:
        errs.append(f"semi2i.decay_epoch: must be in [0, epochs={s.epochs}], got {s.decay_epoch}")
    if not 0.0 < s.d_rate < 1.0:
        errs.append(f"semi2i.d_rate: must be in (0, 1), got {s.d_rate}")
    if s.seeds < 1:
        errs.append(f"semi2i.seeds: must be >= 1, got {s.seeds}")
    if not 0.0 <= s.ema_decay < 1.0:
        errs.append(f"semi2i.ema_decay: must be in [0, 1), got {s.ema_decay}")
    if s.style_path not in STYLE_PATHS:
        errs.append(f"semi2i.style_path: must be one of {list(STYLE_PATHS)}, got {s.style_path!r}")
    for key in ("lr", "adain_eps"):
        if getattr(s, key) <= 0:
            errs.append(f"semi2i.{key}: must be > 0, got {getattr(s, key)}")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(s, key) < 1.0:
            errs.append(f"semi2i.{key}: must be in [0, 1), got {getattr(s, key)}")
    for key in ("lambda_cross", "lambda_self", "lambda_grad", "lambda_adv", "lambda_tone"):
        if getattr(s, key) < 0:
            errs.append(f"semi2i.{key}: must be >= 0, got {getattr(s, key)}")
    errs += _gan_checks("colormapgan", p.colormapgan, p.patch_size, lrs=("lr_g", "lr_d"), lambdas=())
    errs += _gan_checks("cyclegan", p.cyclegan, p.patch_size, lrs=("lr",), lambdas=("lambda_cycle", "lambda_identity"))
    if p.cyclegan.patch_size % 4:
        errs.append(f"cyclegan.patch_size: must be divisible by 4 (two stride-2 convs), got {p.cyclegan.patch_size}")
    if p.cyclegan.pool_size < 0:
        errs.append(f"cyclegan.pool_size: must be >= 0, got {p.cyclegan.pool_size}")
    if p.colormapgan.bins < 2:
        errs.append(f"colormapgan.bins: must be >= 2, got {p.colormapgan.bins}")
    if u.lr <= 0:
        errs.append(f"unet.lr: must be > 0, got {u.lr}")
    if u.finetune_steps < 0:
        errs.append(f"unet.finetune_steps: must be >= 0, got {u.finetune_steps}")
    if u.finetune_lr_schedule not in FINETUNE_LR_SCHEDULES:
        errs.append(f"unet.finetune_lr_schedule: must be one of {list(FINETUNE_LR_SCHEDULES)}, got {u.finetune_lr_schedule!r}")
    return errs


def _gan_checks(section: str, c: Any, grid: int, lrs: tuple[str, ...], lambdas: tuple[str, ...]) -> list[str]:
    """Checks shared by the baseline GAN sections (patch size, schedule, learning rates, betas)."""
    errs = []
    if c.patch_size > grid:
        errs.append(f"{section}.patch_size: {c.patch_size} exceeds the patch grid size {grid}")
    if c.patch_size < 32:
        errs.append(f"{section}.patch_size: the 70x70 PatchGAN needs at least 32, got {c.patch_size}")
    if not 0 <= c.decay_epoch <= c.epochs:
        errs.append(f"{section}.decay_epoch: must be in [0, epochs={c.epochs}], got {c.decay_epoch}")
    errs += [f"{section}.{k}: must be > 0, got {getattr(c, k)}" for k in lrs if getattr(c, k) <= 0]
    errs += [f"{section}.{k}: must be in [0, 1), got {getattr(c, k)}" for k in ("beta1", "beta2")
             if not 0.0 <= getattr(c, k) < 1.0]
    errs += [f"{section}.{k}: must be >= 0, got {getattr(c, k)}" for k in lambdas if getattr(c, k) < 0]
    return errs


def _unknown(path: str, known: Mapping[str, Any]) -> str:
    key = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return f"{path}: unknown key{hint}"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _read_yaml(name_or_path: str | Path) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"profile file {str(path)!r} does not exist")
        text, origin = path.read_text(), str(path)
    else:
        resource = resources.files("semi2i") / PROFILE_DIR / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown profile {str(name_or_path)!r}; available: {', '.join(available_profiles())}"
            )
        text, origin = resource.read_text(), f"{name_or_path!r}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a profile must be a YAML mapping")
    return data, origin


def _expand_dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping):
            node[parts[-1]] = _deep_merge(node.get(parts[-1], {}), _expand_dotted(dict(value)))
        else:
            node[parts[-1]] = value
    return nested


def _deep_merge(base: Any, update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base) if isinstance(base, Mapping) else {}
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
