"""Typed run configuration and the named profiles (``paper``, ``quick``) loaded from YAML.

Profiles are data: ``semi2i/profiles/<name>.yaml``. Everything downstream receives these frozen
pydantic dataclasses (:mod:`semi2i.schema`), so values are validated at construction, and a profile's
bad keys are all reported with their dotted paths in one :class:`ConfigError` (not one crash per run).
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Mapping

import yaml

from semi2i.schema import (Beta, Bool, ConfigError, Float, Int, NonNegFloat, NonNegInt, PosFloat, PosInt, Str, one_of,
                           relations, rule, settings, suggest, validate)

__all__ = ["ConfigError", "SemI2IConfig", "ColorMapGANConfig", "CycleGANConfig", "UNetTrainConfig", "Profile",
           "STYLE_PATHS", "FINETUNE_LR_SCHEDULES", "FINETUNE_GUARDS", "SEMI2I_LR_SCHEDULES", "PRECISIONS", "COMPILE_MODES", "available_profiles", "load_profile",
           "profile_from_dict", "merge_overrides"]

#: SemI2I generator layouts (``semi2i.style_path``; :mod:`semi2i.models.semi2i` explains them).
STYLE_PATHS = ("normalised", "carried")
#: Learning-rate schedules a U-net training or fine-tune may use (``UNetTrainConfig.train_lr_schedule`` and
#: ``finetune_lr_schedule``).
FINETUNE_LR_SCHEDULES = ("constant", "cosine")
#: What a fine-tune does when the label-free score does not rate it clearly above the source U-net
#: (``UNetTrainConfig.finetune_guard``; semi2i.finetune_guard): nothing (the paper), map with the two U-nets'
#: weight average, or map with the source U-net itself.
FINETUNE_GUARDS = ("off", "weight_average", "source_unet")
#: How SemI2I applies Eq. 3 (``SemI2IConfig.lr_schedule``): once per epoch (the paper) or at every step.
SEMI2I_LR_SCHEDULES = ("epoch", "step")
#: Training arithmetic (``<section>.precision``): "bf16" autocasts forward passes and losses (weights,
#: optimizer states and EMAs stay fp32, see semi2i.training.precision); "auto" is bf16 on a device with bf16
#: matrix units (CUDA compute capability >= 8, a CPU with AMX), fp32 elsewhere (semi2i.models.precision).
PRECISIONS = ("fp32", "bf16", "auto")
Precision = Annotated[Str, one_of(PRECISIONS)]
#: How SemI2I's training networks run (``semi2i.compile``): eager PyTorch, compiled by TorchInductor, or
#: compiled where it pays (semi2i.training.compile).
COMPILE_MODES = ("eager", "inductor", "auto")

#: a GAN's training patch: two stride-2 convolutions, and the 70x70 PatchGAN needs 32 px
GanPatch = Annotated[PosInt, rule(lambda v: v % 4 == 0, "must be divisible by 4 (two stride-2 convs), got {v}"),
                     rule(lambda v: v >= 32, "the 70x70 PatchGAN needs at least 32, got {v}")]
PatchGanPatch = Annotated[PosInt, rule(lambda v: v >= 32, "the 70x70 PatchGAN needs at least 32, got {v}")]
Epoch = Annotated[Int, rule(lambda v: v >= 0, "must be >= 0, got {v}")]


def _schedule(section: Any) -> list[str]:
    """The decay epoch inside the schedule (shared by the GAN sections)."""
    if not 0 <= section.decay_epoch <= section.epochs:
        return [f"decay_epoch: must be in [0, epochs={section.epochs}], got {section.decay_epoch}"]
    return []


@settings
class SemI2IConfig:
    """SemI2I model and training settings (paper §2-3). Defaults are the paper's values.

    ``lambda_cross``, ``lambda_self``, ``lambda_grad``, ``lambda_adv`` are λ1..λ4 of Eq. 1-2.
    ``in_bands_a``/``in_bands_b`` depend on the data, so the pipeline sets them at run time with
    :func:`dataclasses.replace`; profiles leave them out.
    """

    in_bands_a: PosInt = 3
    in_bands_b: PosInt = 3
    base_width: PosInt = 64  # encoder widths w, 2w, 4w (DESIGN: 64-128-256)
    n_res_blocks: PosInt = 4  # not given by the paper; 4 as in MUNIT's AdaIN content encoder
    disc_width: PosInt = 64  # PatchGAN ndf
    patch_size: GanPatch = 256  # training patch side, one patch per domain per step
    lambda_cross: NonNegFloat = 10.0  # λ1
    lambda_self: NonNegFloat = 10.0  # λ2
    lambda_grad: NonNegFloat = 10.0  # λ3
    lambda_adv: NonNegFloat = 1.0  # λ4
    lambda_tone: NonNegFloat = 0.0  # λ5, ours (losses.tone_correlation): keeps regional brightness order; 0 = paper
    d_rate: Annotated[Float, rule(lambda v: 0.0 < v < 1.0, "must be in (0, 1), got {v}")] = 0.95  # Algorithm 1 decay rate
    adain_eps: PosFloat = 1e-5
    style_path: Annotated[Str, one_of(STYLE_PATHS)] = "normalised"  # where μ, σ come from ("carried" = ours)
    ema_decay: Beta = 0.0  # stylize with an EMA of the generator weights (ours; 0 = the last iterate, paper)
    target_class_prior: tuple[NonNegFloat, ...] | None = None  # ours: draw source windows in these class proportions (data.class_prior); None = uniform (paper)
    seeds: Annotated[Int, rule(lambda v: v >= 1, "must be >= 1, got {v}")] = 1  # jobs/adapt.py trains this many generators and picks one without labels (semi2i_seeds)
    lr: PosFloat = 1e-3
    beta1: Beta = 0.5  # Adam betas as in CycleGAN (the paper only says "Adam")
    beta2: Beta = 0.999
    epochs: PosInt = 25
    decay_epoch: Epoch = 15
    lr_schedule: Annotated[Str, one_of(SEMI2I_LR_SCHEDULES)] = "epoch"  # Eq. 3 per epoch (paper) or per step, to ~0 (ours)
    max_steps_per_epoch: PosInt | None = None  # cap on min(#A, #B) for time-boxed runs; None = paper
    checkpoint_every: PosInt = 1000  # steps
    preview_every: PosInt = 500  # steps
    log_every: PosInt = 50  # steps (log line + TensorBoard scalars)
    seed: Int = 0
    precision: Precision = "fp32"  # "bf16": autocast on GPUs (semi2i.training.precision)
    tf32: Bool = False  # CUDA: TF32 matmuls/convolutions in the fp32 arithmetic
    compile: Annotated[Str, one_of(COMPILE_MODES)] = "eager"  # ours: "inductor" fuses the small ops (semi2i.training.compile)

    def __post_init__(self) -> None:
        relations(_schedule(self))

    @property
    def lambdas(self) -> tuple[float, float, float, float]:
        return (self.lambda_cross, self.lambda_self, self.lambda_grad, self.lambda_adv)


@settings
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

    in_bands_a: PosInt = 3
    in_bands_b: PosInt = 3
    bins: Annotated[PosInt, rule(lambda v: v >= 2, "must be >= 2, got {v}")] = 256  # LUT entries per band (8-bit data: one per value)
    disc_width: PosInt = 64  # PatchGAN ndf
    patch_size: PatchGanPatch = 256
    lr_g: PosFloat = 5e-3  # the map's learning rate: each entry only learns from the pixels in its bin
    lr_d: PosFloat = 2e-4
    beta1: Beta = 0.5
    beta2: Beta = 0.999
    epochs: PosInt = 25
    decay_epoch: Epoch = 15
    max_steps_per_epoch: PosInt | None = None
    checkpoint_every: PosInt = 1000
    preview_every: PosInt = 500
    log_every: PosInt = 50
    seed: Int = 0
    precision: Precision = "fp32"  # "bf16": autocast on GPUs (semi2i.training.precision)
    tf32: Bool = False  # CUDA: TF32 matmuls/convolutions in the fp32 arithmetic

    def __post_init__(self) -> None:
        relations(_schedule(self))


@settings
class CycleGANConfig:
    """CycleGAN baseline (Zhu et al. 2017), defaults of the reference implementation
    (pytorch-CycleGAN-and-pix2pix): ResNet generators c7s1-w, d2w, d4w, ``n_res_blocks``×R4w, u2w, uw,
    c7s1; 70×70 PatchGANs; LSGAN; λ_cycle = 10, identity 0.5·λ_cycle (only with equal band counts);
    image pools of 50; Adam 2e-4, β = (0.5, 0.999); constant for ``decay_epoch`` epochs, then linear
    decay to ~0 (100 + 100 epochs). An epoch is min(#A, #B) patches, as for SemI2I."""

    in_bands_a: PosInt = 3
    in_bands_b: PosInt = 3
    base_width: PosInt = 64  # ngf
    n_res_blocks: PosInt = 9  # 9 for 256² in the reference (6 for 128²)
    disc_width: PosInt = 64  # ndf
    patch_size: GanPatch = 256
    lambda_cycle: NonNegFloat = 10.0
    lambda_identity: NonNegFloat = 0.5  # × lambda_cycle
    pool_size: NonNegInt = 50  # 0 = no pool
    lr: PosFloat = 2e-4
    beta1: Beta = 0.5
    beta2: Beta = 0.999
    epochs: PosInt = 200
    decay_epoch: Epoch = 100
    max_steps_per_epoch: PosInt | None = None
    checkpoint_every: PosInt = 1000
    preview_every: PosInt = 500
    log_every: PosInt = 50
    seed: Int = 0
    precision: Precision = "fp32"  # "bf16": autocast on GPUs (semi2i.training.precision)
    tf32: Bool = False  # CUDA: TF32 matmuls/convolutions in the fp32 arithmetic

    def __post_init__(self) -> None:
        relations(_schedule(self))


@settings
class UNetTrainConfig:
    """U-net training and fine-tuning budget (paper §3). Defaults are the paper's values."""

    base_width: PosInt = 64
    depth: PosInt = 4
    patch_size: PosInt = 256
    batch_size: PosInt = 32
    train_steps: PosInt = 8000
    finetune_steps: NonNegInt = 2500
    lr: PosFloat = 1e-4
    # Learning rate over a fine-tune: "constant" (the paper) or "cosine" (decayed from ``lr`` towards 0, so
    # the fine-tuned weights are not at the mercy of the last few batches; see docs/adaptation-study.md).
    finetune_lr_schedule: Annotated[Str, one_of(FINETUNE_LR_SCHEDULES)] = "constant"
    # The same for a training from scratch (the source U-net, the target oracle, a fine-tune without a
    # source U-net to start from): a short run at a constant rate also ends on a noisy iterate.
    train_lr_schedule: Annotated[Str, one_of(FINETUNE_LR_SCHEDULES)] = "constant"
    precision: Precision = "fp32"  # "bf16": autocast on GPUs (semi2i.training.precision)
    tf32: Bool = False  # CUDA: TF32 matmuls/convolutions in the fp32 arithmetic
    channels_last: Bool = False  # NHWC weights and batches in training (a memory layout: same arithmetic)
    # Cross-entropy per pixel weighted by its class's frequency^-alpha in the training windows (0: plain
    # cross-entropy, the paper; 1: every class weighs the same in the loss; semi2i.training.class_balance)
    class_balance: Annotated[Float, rule(lambda v: 0 <= v <= 1, "must be in [0, 1], got {v}")] = 0.0
    # Do no harm (semi2i.finetune_guard): unless the label-free score rates the fine-tune significantly higher
    # than the source U-net (a paired t-test over its draws, at 5 % over all the run's fine-tunes), "source_unet"
    # maps with the source U-net itself, "weight_average" with the average of the two's weights; "off": the paper
    finetune_guard: Annotated[Str, one_of(FINETUNE_GUARDS)] = "off"
    # Train the source U-net again (seed + 1000·k) up to this many times while it leaves a class of its own city
    # unlearned (finds < 5 % of its pixels; semi2i.source_fit): every method starts from it. 0: the paper
    source_retrains: NonNegInt = 0
    # Steps of the colour-blind reference U-net (semi2i.colour_blind): trained on the source with each patch's colours
    # randomly rotated, its map of the target is what the report's label-free pick compares each method's map with.
    # 0: none, and the pick is the label-free score's (the paper has neither)
    reference_steps: NonNegInt = 0


@settings
class Profile:
    """A named set of settings. ``patch_size``/``overlap`` is the grid that cuts city rasters into
    patches (paper: 256 with overlap 32); the stylizers tile whole rasters with the same overlap."""

    name: Str
    patch_size: PosInt
    overlap: Int
    semi2i: SemI2IConfig = dataclasses.field(default_factory=SemI2IConfig)
    unet: UNetTrainConfig = dataclasses.field(default_factory=UNetTrainConfig)
    colormapgan: ColorMapGANConfig = dataclasses.field(default_factory=ColorMapGANConfig)
    cyclegan: CycleGANConfig = dataclasses.field(default_factory=CycleGANConfig)

    def __post_init__(self) -> None:
        problems = [] if 0 <= self.overlap < self.patch_size else [
            f"overlap: must be in [0, patch_size={self.patch_size}), got {self.overlap}"]
        for section in ("semi2i", "unet", "colormapgan", "cyclegan"):
            size = getattr(self, section).patch_size
            if size > self.patch_size:
                problems.append(f"{section}.patch_size: {size} exceeds the patch grid size {self.patch_size}")
        relations(problems)


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
    return profile_from_dict(merge_overrides(raw, overrides or {}), origin=origin)


def profile_from_dict(data: Mapping[str, Any], origin: str = "<dict>") -> Profile:
    """Validate a plain mapping into a :class:`Profile`, collecting every error before raising."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: a profile must be a mapping, got {type(data).__name__}")
    profile, errors = validate(Profile, dict(data), unknown=lambda path, known: f"{path}: unknown key {suggest(path.rsplit('.', 1)[-1], known)}",
                               line=lambda path, message: f"{path}: {message}")
    if errors:
        raise ConfigError(f"invalid profile {origin}:\n" + "\n".join(f"  - {e}" for e in errors))
    return profile


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, section by section; keys of either may be dotted paths
    (``{"semi2i.lr": 2e-4}`` = ``{"semi2i": {"lr": 2e-4}}``), which is what a sweep or a CLI passes."""
    return _deep_merge(_expand_dotted(dict(base)), _expand_dotted(dict(overrides)))


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
