"""The Ray Train worker loop of the image-translation GANs: SemI2I and the ColorMapGAN / CycleGAN
baselines, one loop through the small step protocol of :mod:`semi2i.training.gan`.

Every worker runs the single-process step class (:class:`SemI2IStep`, :class:`ColorMapGANStep`,
:class:`CycleGANStep`) unchanged, on DDP-wrapped networks. **Style statistics**: each step, every
worker's batch μ, σ are averaged across workers with ``all_reduce`` before Algorithm 1, so all replicas
hold the same global statistics (DDP does not touch them: :class:`GlobalStyleStats` is not inside a
DDP module). The multi-city loop (:mod:`semi2i.training.multicity_loop`) shares its logging and
checkpointing (:func:`log_gan_step`, :func:`finish_gan`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from semi2i.checkpoints import COLORMAPGAN_CHECKPOINT, CYCLEGAN_CHECKPOINT, SEMI2I_CHECKPOINT
from semi2i.config import ColorMapGANConfig, CycleGANConfig, SemI2IConfig
from semi2i.data.class_prior import prior_weighted_windows
from semi2i.data.patches import city_windows
from semi2i.data.store import open_store
from semi2i.models.precision import resolve_precision
from semi2i.training.compile import compile_in_place, should_compile
from semi2i.training.progress import Progress
from semi2i.training.step_data import StepPlan, StepReaders
from semi2i.training.ray_worker import allgather, allreduce_mean, crash_once, report_checkpoint, restored_state, setup_worker, wrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANSpec:
    """What :func:`gan_worker_loop` needs to know about one GAN (looked up by name in the workers)."""

    name: str  # stage name, TensorBoard folder, preview prefix
    checkpoint: str  # file in the run folder (and in Ray's checkpoints)
    config: type
    build: Callable[[Any, torch.device, int, int], Any]  # (cfg, device, rank, world) -> GANStep
    preview: Callable[[Any, torch.Tensor, torch.Tensor, Path], Any]
    summary: Callable[[Any, int, int], dict] | None = None  # collective extras for the returned summary


def _build_semi2i(cfg: SemI2IConfig, device: torch.device, rank: int, world: int) -> Any:
    from semi2i.training.semi2i_step import SemI2IStep, build_models

    models = build_models(cfg).to(device)
    return SemI2IStep(cfg, wrap(models.generator, world), wrap(models.disc_a, world), wrap(models.disc_b, world),
                      models.style, reduce_style_stats=allreduce_mean if world > 1 else None)


def _semi2i_preview(step: Any, a: torch.Tensor, b: torch.Tensor, path: Path) -> Any:
    from semi2i.training.semi2i_trainer import save_preview

    with torch.no_grad():
        return save_preview(step, a, b, path)


def _semi2i_summary(step: Any, rank: int, world: int) -> dict:
    """Every rank's global statistics, so callers can verify they are identical."""
    stats = torch.cat([b.detach().flatten() for b in step.style.buffers()])
    return {"style_stats_per_rank": [g.cpu().numpy() for g in allgather(stats, world)]}


def _build_colormapgan(cfg: ColorMapGANConfig, device: torch.device, rank: int, world: int) -> Any:
    from semi2i.training.colormapgan_step import ColorMapGANStep, build_models

    models = build_models(cfg).to(device)
    return ColorMapGANStep(cfg, wrap(models.generator, world), wrap(models.disc_b, world))


def _build_cyclegan(cfg: CycleGANConfig, device: torch.device, rank: int, world: int) -> Any:
    from semi2i.training.cyclegan_step import CycleGANStep, build_models

    m = build_models(cfg).to(device)
    return CycleGANStep(cfg, wrap(m.gen_ab, world), wrap(m.gen_ba, world), wrap(m.disc_a, world), wrap(m.disc_b, world),
                        rank=rank, world=world, gather=(lambda t: allgather(t.to(device), world)) if world > 1 else None)


def _gan_preview(step: Any, a: torch.Tensor, b: torch.Tensor, path: Path) -> Any:
    from semi2i.training.gan import save_gan_preview

    with torch.no_grad():
        return save_gan_preview(step, a, b, path)


GANS: dict[str, GANSpec] = {
    "semi2i": GANSpec("semi2i", SEMI2I_CHECKPOINT, SemI2IConfig, _build_semi2i, _semi2i_preview, _semi2i_summary),
    "colormapgan": GANSpec("colormapgan", COLORMAPGAN_CHECKPOINT, ColorMapGANConfig, _build_colormapgan, _gan_preview),
    "cyclegan": GANSpec("cyclegan", CYCLEGAN_CHECKPOINT, CycleGANConfig, _build_cyclegan, _gan_preview),
}


def gan_worker_loop(config: dict) -> dict:
    """Ray Train worker: one patch per domain per worker per step (paper §3) through any GAN step
    (``config["model"]`` in :data:`GANS`), with the same data, schedule, checkpoints and previews."""
    from semi2i.training.semi2i_trainer import steps_per_epoch

    spec = GANS[config["model"]]
    name = config.get("name") or spec.name  # a run's name (K SemI2I seeds: semi2i_seed<k>)
    checkpoint = spec.checkpoint if name == spec.name else f"{name}.pt"
    rank, world, device = setup_worker(config["threads"])
    cfg = spec.config(**config["cfg"])
    run_dir = Path(config["run_dir"])
    step = spec.build(cfg, device, rank, world)
    restored = restored_state(checkpoint)
    if restored is not None:
        step.load_state_dict(restored)

    source = open_store(config["source"])
    windows_a = city_windows(source, cfg.patch_size, config["overlap"])
    windows_b = city_windows(open_store(config["target"]), cfg.patch_size, config["overlap"])
    spe = max(1, steps_per_epoch(cfg, len(windows_a), len(windows_b)) // world)
    if getattr(cfg, "target_class_prior", None):  # an epoch stays one pass over the distinct windows
        windows_a = prior_weighted_windows(source, windows_a, cfg.target_class_prior)
    if hasattr(step, "steps_per_epoch"):  # SemI2I's Eq. 3 schedule (per step with lr_schedule: step)
        step.steps_per_epoch = spe
    total = config.get("max_steps") or cfg.epochs * spe
    progress = Progress(name, run_dir, rank, total, step.step, "steps", 1)
    compiled = should_compile(getattr(cfg, "compile", "eager"), device, total - step.step)
    if compiled:  # SemI2I's networks (the weight EMA stays eager: it was copied when the step was built)
        models = step.models
        compile_in_place((models.generator, models.disc_a, models.disc_b))
    if rank == 0:
        log.info("%s: %s on %s (precision: %s)%s", name, resolve_precision(device, cfg.precision), device, cfg.precision,
                 ", compiled by TorchInductor" if compiled else "")
    plan = StepPlan(((tuple(windows_a), cfg.seed), (tuple(windows_b), cfg.seed + 1_000_003)), rank, world, 1, "unit")
    readers = StepReaders(config)
    losses: dict[str, float] = {}
    for batch in readers.steps(plan, step.step, total):
        step.set_epoch(step.step // spe)
        losses = step.train_step(batch["a"], batch["b"])
        done = step.step
        log_gan_step(step, losses, cfg, total, progress, rank, checkpoint)
        if rank == 0 and done % cfg.preview_every == 0:
            spec.preview(step, batch["a"], batch["b"], run_dir / "previews" / f"{name}_step{done:06d}.png")
        crash_once(config, done)

    extra = spec.summary(step, rank, world) if spec.summary else {}
    return finish_gan(step, losses, progress, rank, run_dir / checkpoint, {**extra, **readers.summary()})


def log_gan_step(step: Any, losses: dict[str, float], cfg: Any, total: int, progress: Progress, rank: int,
                  checkpoint_name: str, note: str = "") -> None:
    """After a GAN step: metrics every ``log_every`` steps, plus the training state every
    ``checkpoint_every`` steps and at the last one (``note``: rank 0 logs it with the metrics)."""
    done = step.step
    checkpoint = done % cfg.checkpoint_every == 0 or done == total
    if done % cfg.log_every == 0 or checkpoint:
        metrics = {**losses, "step": done, "epoch": step.epoch, "steps_per_s": progress.rate(done)}
        progress.log(done, metrics)
        if note and rank == 0:
            log.info("%s step %d: %s", progress.name, done, note)
        if checkpoint:
            state = step.state_dict()  # on every rank: it may gather (CycleGAN's pools)
            report_checkpoint(metrics, rank, lambda: state, checkpoint_name)


def finish_gan(step: Any, losses: dict[str, float], progress: Progress, rank: int, path: Path, extra: dict) -> dict:
    """The final training state (built on every rank, saved by rank 0) and this rank's summary."""
    from semi2i.checkpoints import save_checkpoint

    progress.close()
    state = step.state_dict()
    if rank == 0:
        save_checkpoint(path, state)
    return {"step": step.step, "epoch": step.epoch, "losses": losses, "steps_per_s": progress.rate(step.step), **extra}
