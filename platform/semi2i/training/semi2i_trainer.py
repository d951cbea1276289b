"""Single-process SemI2I training: epochs, Eq. 3 schedule, checkpoints/resume, TensorBoard, previews.

Layout under ``run_dir``: ``checkpoints/semi2i_last.pt`` (the whole training state, rewritten every
``checkpoint_every`` steps and at the end), ``tensorboard/semi2i/`` (a scalar per loss term and the
learning rate) and ``previews/semi2i_step<N>.png`` (A | fake A | B | fake B, global statistics).

Data contract: ``patches_a``/``patches_b`` yield float tensors (1, C, h, w) in [-1, 1], e.g. random
patches from a stream. An epoch is min(#A, #B) steps (paper), optionally capped by
``cfg.max_steps_per_epoch``. A re-iterable (a list) is restarted when exhausted; a one-shot iterator
must last the run. Resuming restores models, optimizers, statistics and the step counter from the
checkpoint; the caller provides the data stream from where it should continue (for random patch
sampling, any fresh stream).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from semi2i.config import SemI2IConfig
from semi2i.training.semi2i_step import LOSS_KEYS, SemI2IStep

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "semi2i_last.pt"


@dataclass
class SemI2IRun:
    """What a finished (or time-boxed) training leaves: the step object and the checkpoint path."""

    step: SemI2IStep
    checkpoint: Path
    total_steps: int
    last_losses: dict[str, float]


def steps_per_epoch(cfg: SemI2IConfig, num_patches_a: int, num_patches_b: int) -> int:
    """min(#patches A, #patches B) (paper §3), capped by ``cfg.max_steps_per_epoch`` when set."""
    steps = min(num_patches_a, num_patches_b)
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps <= 0:
        raise ValueError(f"no training steps: {num_patches_a} patches in A, {num_patches_b} in B")
    return steps


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def train_semi2i(
    cfg: SemI2IConfig,
    patches_a: Iterable[Tensor],
    patches_b: Iterable[Tensor],
    run_dir: str | Path,
    *,
    num_patches_a: int,
    num_patches_b: int,
    max_steps: int | None = None,
    device: torch.device | str = "cpu",
) -> SemI2IRun:
    """Train (or resume training) SemI2I into ``run_dir``; returns when ``cfg.epochs`` are done.

    ``max_steps`` stops early after that many total steps (a checkpoint is written), for time-boxed
    runs; calling again with the same ``run_dir`` resumes.
    """
    run_dir = Path(run_dir)
    per_epoch = steps_per_epoch(cfg, num_patches_a, num_patches_b)
    total = cfg.epochs * per_epoch
    stop = total if max_steps is None else min(total, max_steps)
    step = SemI2IStep.create(cfg, device, steps_per_epoch=per_epoch)
    ckpt = checkpoint_path(run_dir)
    if ckpt.exists():
        step.load(ckpt)
        log.info("resuming SemI2I from %s at step %d/%d", ckpt, step.step, total)
    stream_a, stream_b = _Stream(patches_a, "A"), _Stream(patches_b, "B")
    writer = SummaryWriter(str(run_dir / "tensorboard" / "semi2i"), purge_step=step.step)
    losses: dict[str, float] = {}
    started, first = time.perf_counter(), step.step
    try:
        while step.step < stop:
            epoch = step.step // per_epoch
            if epoch != step.epoch:
                step.set_epoch(epoch)
            a, b = next(stream_a), next(stream_b)
            losses = step(a, b)
            n = step.step
            if n % cfg.log_every == 0 or n == stop:
                for key in LOSS_KEYS:
                    writer.add_scalar(f"semi2i/{key}", losses[key], n)
                writer.add_scalar("semi2i/lr", losses["lr"], n)
                rate = (n - first) / max(time.perf_counter() - started, 1e-9)
                log.info(
                    "semi2i step %d/%d epoch %d/%d lr %.2e L_G %.4f (cross %.4f self %.4f grad %.4f adv %.4f tone %.4f) "
                    "L_D %.4f | %.2f steps/s ETA %s",
                    n, total, epoch + 1, cfg.epochs, losses["lr"], losses["L_G"], losses["L_cross"],
                    losses["L_self"], losses["L_grad"], losses["L_adv_G"], losses["L_tone"], losses["L_D"], rate,
                    _format_eta((stop - n) / rate if rate > 0 else float("inf")),
                )
            if n % cfg.preview_every == 0 or n == stop:
                save_preview(step, a, b, run_dir / "previews" / f"semi2i_step{n:07d}.png")
            if n % cfg.checkpoint_every == 0 or n == stop:
                step.save(ckpt)
    finally:
        writer.close()
    if not ckpt.exists():  # nothing left to train, but callers rely on the checkpoint
        step.save(ckpt)
    return SemI2IRun(step=step, checkpoint=ckpt, total_steps=total, last_losses=losses)


class _Stream:
    """next() over an iterable of patches, restarting re-iterables when they run out."""

    def __init__(self, source: Iterable[Tensor], name: str):
        self.source, self.name = source, name
        self.it: Iterator[Tensor] = iter(source)
        self.restartable = self.it is not source

    def __next__(self) -> Tensor:
        try:
            return next(self.it)
        except StopIteration:
            if not self.restartable:
                raise RuntimeError(f"the patch stream of domain {self.name} ended before training did") from None
            self.it = iter(self.source)
            try:
                return next(self.it)
            except StopIteration:
                raise RuntimeError(f"the patch source of domain {self.name} is empty") from None


def save_preview(step: SemI2IStep, a: Tensor, b: Tensor, path: Path) -> Path:
    """A | fake A | B | fake B, side by side, stylized with the *global* statistics (test-time view)."""
    generator, style = step.models.generator, step.style
    device = next(generator.parameters()).device
    a, b = a[:1].to(device), b[:1].to(device)
    fake_a = generator.stylize(a, "a", style)
    fake_b = generator.stylize(b, "b", style)
    tiles = [to_rgb8(x[0]) for x in (a, fake_a, b, fake_b)]
    height = max(t.shape[0] for t in tiles)
    canvas = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def to_rgb8(x: Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W, 3) uint8: first three bands, or a gray band repeated."""
    x = x.detach().float().cpu()
    if x.shape[0] >= 3:
        x = x[:3]
    else:
        x = x.mean(dim=0, keepdim=True).expand(3, -1, -1)
    rgb = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return rgb.permute(1, 2, 0).numpy()


def _format_eta(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
