"""One SemI2I training step and the whole training state, shared by the single-process trainer and the
Ray Train (DDP) loop.

A step (paper §3): one patch per domain → one generator update on L_G (Eq. 1) → one discriminator
update on L_D (Eq. 2) with detached fakes → the Algorithm 1 update of the global style statistics.

Made for data parallelism without changes:

* the generator and the discriminators may be passed wrapped in ``DistributedDataParallel``; the
  generator update calls the *unwrapped* discriminators with ``requires_grad`` off, so no gradient
  work is spent on D and DDP's reducer never waits for D gradients that do not come;
* the style statistics go through ``reduce_style_stats`` (identity here, an all-reduce mean under Ray
  Train) before Algorithm 1, so every replica holds the same global statistics;
* :class:`GlobalStyleStats` is a separate module, not inside the DDP-wrapped generator, so DDP's
  buffer broadcast cannot overwrite it.

With ``cfg.ema_decay > 0`` the step also keeps an exponential moving average of the generator weights
(standard for GAN generators since ProGAN/StyleGAN: the last iterate of batch-1 Adam is one noisy draw
around where training went) and Algorithm 1's global statistics of *that* generator's encoders
(``style_ema``), so the stylizer gets a generator and statistics that belong together.

``cfg.precision == "bf16"`` runs the forward passes and losses under bf16 autocast; the optimizer steps,
the weight EMA and Algorithm 1 stay fp32 (:mod:`semi2i.training.precision`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from semi2i.checkpoints import build_generator, load_checkpoint, save_checkpoint
from semi2i.config import SemI2IConfig
from semi2i.losses import discriminator_loss, generator_loss
from semi2i.models.discriminator import PatchDiscriminator
from semi2i.models.semi2i import GlobalStyleStats, SemI2IGenerator, channel_stats
from semi2i.training.ddp import unwrap
from semi2i.training.precision import autocast, use_tf32
from semi2i.training.schedule import semi2i_learning_rate, semi2i_step_learning_rate

StyleReducer = Callable[[Tensor], Tensor]

#: Names of the loss values a step returns (and the trainer logs), in the paper's notation.
LOSS_KEYS = ("L_G", "L_cross", "L_self", "L_grad", "L_adv_G", "L_tone", "L_D", "L_adv_D")


@dataclass
class SemI2IModels:
    """The trainable networks and the global style statistics, built from one config."""

    generator: SemI2IGenerator
    disc_a: PatchDiscriminator  # judges domain A's band space: real A vs fake B
    disc_b: PatchDiscriminator  # real B vs fake A
    style: GlobalStyleStats

    def to(self, device: torch.device | str) -> "SemI2IModels":
        for module in (self.generator, self.disc_a, self.disc_b, self.style):
            module.to(device)
        return self


def build_models(cfg: SemI2IConfig) -> SemI2IModels:
    """Fresh networks, initialised from ``cfg.seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = build_generator(cfg)
        disc_a = PatchDiscriminator(cfg.in_bands_a, cfg.disc_width)
        disc_b = PatchDiscriminator(cfg.in_bands_b, cfg.disc_width)
    return SemI2IModels(generator, disc_a, disc_b, GlobalStyleStats(generator.style_channels, cfg.d_rate))


def ema_rate(decay: float, step: int) -> float:
    """The EMA's decay at ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))``. The warm-up keeps
    the average from being dominated by the random initial weights in short runs."""
    return min(decay, (1.0 + step) / (10.0 + step))


class Eq3Schedule:
    """Eq. 3's learning rate on a step's ``opt_g`` and ``opt_d``: shared by the two-city and the
    multi-city SemI2I steps, which train with the same schedule."""

    cfg: SemI2IConfig
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    epoch: int
    step: int
    #: set by the training loop; ``lr_schedule: step`` needs it to place a step on Eq. 3's line
    steps_per_epoch: int | None = None

    @property
    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def set_epoch(self, epoch: int) -> None:
        """Enter ``epoch`` (0-based): both optimizers take Eq. 3's learning rate (``lr_schedule: step``:
        the rate of the epoch's first step; :meth:`begin_step` moves it at every step)."""
        self.epoch = epoch
        if self.cfg.lr_schedule == "step" and self.steps_per_epoch:
            self.begin_step()
            return
        self._set_lr(semi2i_learning_rate(epoch, self.cfg.lr, self.cfg.epochs, self.cfg.decay_epoch))

    def begin_step(self) -> None:
        """Before each update: with ``lr_schedule: step``, Eq. 3's rate at this step (:func:`semi2i_step_learning_rate`)."""
        if self.cfg.lr_schedule != "step":
            return
        if not self.steps_per_epoch:
            raise RuntimeError("lr_schedule 'step' needs the loop to set steps_per_epoch before training")
        spe = self.steps_per_epoch
        self._set_lr(semi2i_step_learning_rate(min(self.step, self.cfg.epochs * spe - 1), self.cfg.lr,
                                               self.cfg.epochs * spe, self.cfg.decay_epoch * spe))

    def _set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr


class SemI2IStep(Eq3Schedule):
    """Callable training step holding the models, both Adam optimizers, the step/epoch counters.

    ``generator``/``disc_a``/``disc_b`` may be DDP-wrapped; ``style`` must not be. ``reduce_style_stats``
    receives the step's batch-mean statistics stacked as a (4, C) tensor [μ_A; σ_A; μ_B; σ_B] and
    returns the tensor Algorithm 1 should use (under DDP: the mean over workers).
    """

    def __init__(
        self,
        cfg: SemI2IConfig,
        generator: nn.Module,
        disc_a: nn.Module,
        disc_b: nn.Module,
        style: GlobalStyleStats,
        *,
        reduce_style_stats: StyleReducer | None = None,
    ):
        self.cfg = cfg
        self.generator, self.disc_a, self.disc_b, self.style = generator, disc_a, disc_b, style
        self.reduce_style_stats = reduce_style_stats or (lambda stats: stats)
        use_tf32(cfg.tf32, next(unwrap(generator).parameters()).device)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(list(disc_a.parameters()) + list(disc_b.parameters()), lr=cfg.lr, betas=betas)
        self.step = 0  # completed steps
        self.epoch = 0
        self.set_epoch(0)
        # The stylizing generator (an EMA of the weights) and Algorithm 1 on its encoders; None when off.
        self.generator_ema: SemI2IGenerator | None = None
        self.style_ema: GlobalStyleStats | None = None
        if cfg.ema_decay > 0:
            self.generator_ema = copy.deepcopy(unwrap(generator)).requires_grad_(False)
            self.style_ema = copy.deepcopy(style)

    @classmethod
    def create(cls, cfg: SemI2IConfig, device: torch.device | str = "cpu", steps_per_epoch: int | None = None,
               **kwargs: Any) -> "SemI2IStep":
        """Build fresh models from ``cfg`` (single process) and wrap them in a step. ``steps_per_epoch`` places
        each step on Eq. 3's line, which ``lr_schedule: step`` (the quick profile's) needs before the first step."""
        m = build_models(cfg).to(device)
        step = cls(cfg, m.generator, m.disc_a, m.disc_b, m.style, **kwargs)
        if steps_per_epoch is not None:
            step.steps_per_epoch = steps_per_epoch
            step.set_epoch(step.epoch)
        return step

    @property
    def models(self) -> SemI2IModels:
        """The unwrapped networks (what stylizing and checkpoints use)."""
        return SemI2IModels(unwrap(self.generator), unwrap(self.disc_a), unwrap(self.disc_b), self.style)

    def __call__(self, a: Tensor, b: Tensor) -> dict[str, float]:
        """One step on a batch per domain (paper: one patch each), images in [-1, 1].

        Returns every loss term of Eq. 1-2 as floats, plus ``lr``.
        """
        self.begin_step()
        device = next(unwrap(self.generator).parameters()).device
        a, b = a.to(device), b.to(device)
        d_a, d_b = unwrap(self.disc_a), unwrap(self.disc_b)

        # Generator update on L_G (Eq. 1). D only scores the fakes: no gradients for its weights.
        d_params = list(d_a.parameters()) + list(d_b.parameters())
        for p in d_params:
            p.requires_grad_(False)
        try:
            with autocast(device, self.cfg.precision):
                out = self.generator(a, b)
                g_terms = generator_loss(a, b, out, d_a, d_b, self.cfg.lambdas, self.cfg.lambda_tone)
            self.opt_g.zero_grad(set_to_none=True)
            g_terms["total"].backward()
            self.opt_g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)

        # Discriminator update on L_D (Eq. 2), through the (possibly DDP-wrapped) discriminators.
        with autocast(device, self.cfg.precision):
            d_terms = discriminator_loss(
                a, b, out["fake_a"].detach(), out["fake_b"].detach(), self.disc_a, self.disc_b, self.cfg.lambda_adv
            )
        self.opt_d.zero_grad(set_to_none=True)
        d_terms["total"].backward()
        self.opt_d.step()

        # Algorithm 1 on this step's batch-mean μ, σ (all-reduced across workers by the hook), for the
        # trained generator and, when kept, for its EMA (one all-reduce for both).
        rows = [out[k].detach().float().mean(dim=0) for k in ("mu_a", "sigma_a", "mu_b", "sigma_b")]
        if self.generator_ema is not None:
            self._update_ema()
            rows += self._ema_style_rows(a, b)
        stats = self.reduce_style_stats(torch.stack(rows))
        self.style.update(*stats[:4])
        if self.style_ema is not None:
            self.style_ema.update(*stats[4:])
        self.step += 1

        values = {
            "L_G": g_terms["total"], "L_cross": g_terms["cross"], "L_self": g_terms["self"],
            "L_grad": g_terms["grad"], "L_adv_G": g_terms["adv_g"], "L_tone": g_terms["tone"],
            "L_D": d_terms["total"], "L_adv_D": d_terms["adv_d"],
        }
        losses = {k: float(v.detach()) for k, v in values.items()}
        losses["lr"] = self.lr
        return losses

    train_step = __call__  # the name in the GANStep protocol (semi2i.training.gan)

    @torch.no_grad()
    def _update_ema(self) -> None:
        rate = ema_rate(self.cfg.ema_decay, self.step)
        trained = unwrap(self.generator)
        for avg, p in zip(self.generator_ema.parameters(), trained.parameters()):
            avg.lerp_(p.detach(), 1.0 - rate)
        for avg, b in zip(self.generator_ema.buffers(), trained.buffers()):
            avg.copy_(b)

    @torch.no_grad()
    def _ema_style_rows(self, a: Tensor, b: Tensor) -> list[Tensor]:
        """Batch-mean μ_A, σ_A, μ_B, σ_B of the EMA encoders' embeddings of this step's patches."""
        rows = []
        for encoder, x in ((self.generator_ema.enc_a, a), (self.generator_ema.enc_b, b)):
            with autocast(x.device, self.cfg.precision):
                embedding = encoder(x)[0]
            mu, sigma = channel_stats(embedding, self.cfg.adain_eps)  # fp32
            rows += [mu.mean(dim=0), sigma.mean(dim=0)]
        return rows

    @property
    def stylizing(self) -> tuple[SemI2IGenerator, GlobalStyleStats]:
        """The generator and global statistics that stylize: the EMA pair when kept, else the last iterate."""
        if self.generator_ema is not None:
            return self.generator_ema, self.style_ema
        return self.models.generator, self.style

    def stylize(self, image: Tensor) -> Tensor:
        """Test time: A's content in B's *global* style (fake A), any size."""
        generator, style = self.stylizing
        return generator.stylize(image, "a", style)

    def preview_images(self, a: Tensor, b: Tensor) -> list[Tensor]:
        """A | fake A | B | fake B with the stylizing generator's global statistics (what ``save_preview`` draws)."""
        generator, style = self.stylizing
        return [a, generator.stylize(a, "a", style), b, generator.stylize(b, "b", style)]

    # --- the whole training state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All weights, both optimizers, counters, global statistics and the config (plain types)."""
        m = self.models
        state = {
            "generator": m.generator.state_dict(),
            "disc_a": m.disc_a.state_dict(),
            "disc_b": m.disc_b.state_dict(),
            "style": m.style.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.cfg),
        }
        if self.generator_ema is not None:
            state["generator_ema"] = self.generator_ema.state_dict()
            state["style_ema"] = self.style_ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.models
        m.generator.load_state_dict(state["generator"])
        m.disc_a.load_state_dict(state["disc_a"])
        m.disc_b.load_state_dict(state["disc_b"])
        m.style.load_state_dict(state["style"])
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(state["generator_ema"])
            self.style_ema.load_state_dict(state["style_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.set_epoch(int(state["epoch"]))

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.state_dict())

    def load(self, path: str | Path) -> None:
        device = next(unwrap(self.generator).parameters()).device
        self.load_state_dict(load_checkpoint(path, map_location=device))

