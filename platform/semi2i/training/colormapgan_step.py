"""One ColorMapGAN training step and its whole training state (single process or DDP under Ray Train).

A step: the colour map G turns a source patch into a fake target patch; one G update on the LSGAN
generator loss (D scores the fake, its weights frozen), then one D update on LSGAN's discriminator
loss (real target vs the detached fake). Adversarial loss only, as in the paper: the map cannot
change structure, so nothing else is needed to keep it. One direction, source → target.
``cfg.precision == "bf16"``: forward passes and losses under bf16 autocast, fp32 weights and Adam.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from semi2i.checkpoints import save_checkpoint
from semi2i.config import ColorMapGANConfig
from semi2i.losses import lsgan_discriminator, lsgan_generator
from semi2i.models.colormapgan import ColorMapGenerator, require_equal_bands
from semi2i.models.discriminator import PatchDiscriminator
from semi2i.training.precision import autocast, use_tf32
from semi2i.training.schedule import linear_decay_learning_rate
from semi2i.training.ddp import unwrap

LOSS_KEYS = ("L_G", "L_D")


@dataclass
class ColorMapGANModels:
    generator: ColorMapGenerator  # source → target colours
    disc_b: PatchDiscriminator  # real target vs fake (mapped source)

    def to(self, device: torch.device | str) -> "ColorMapGANModels":
        self.generator.to(device)
        self.disc_b.to(device)
        return self


def build_models(cfg: ColorMapGANConfig) -> ColorMapGANModels:
    """Identity map and a fresh discriminator from ``cfg.seed`` (global RNG untouched)."""
    bands = require_equal_bands(cfg.in_bands_a, cfg.in_bands_b)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        disc = PatchDiscriminator(bands, cfg.disc_width)
    return ColorMapGANModels(ColorMapGenerator(bands, cfg.bins), disc)


class ColorMapGANStep:
    """:class:`semi2i.training.gan.GANStep` for ColorMapGAN. ``generator``/``disc_b`` may be DDP-wrapped."""

    loss_keys = LOSS_KEYS

    def __init__(self, cfg: ColorMapGANConfig, generator: nn.Module, disc_b: nn.Module):
        self.cfg, self.generator, self.disc_b = cfg, generator, disc_b
        use_tf32(cfg.tf32, unwrap(generator).weight.device)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(disc_b.parameters(), lr=cfg.lr_d, betas=betas)
        self.step = 0
        self.epoch = 0
        self.set_epoch(0)

    @classmethod
    def create(cls, cfg: ColorMapGANConfig, device: torch.device | str = "cpu") -> "ColorMapGANStep":
        m = build_models(cfg).to(device)
        return cls(cfg, m.generator, m.disc_b)

    @property
    def models(self) -> ColorMapGANModels:
        return ColorMapGANModels(unwrap(self.generator), unwrap(self.disc_b))

    def set_epoch(self, epoch: int) -> None:
        c = self.cfg
        for opt, lr in ((self.opt_g, c.lr_g), (self.opt_d, c.lr_d)):
            for group in opt.param_groups:
                group["lr"] = linear_decay_learning_rate(epoch, lr, c.epochs, c.decay_epoch)
        self.epoch = epoch

    def train_step(self, a: Tensor, b: Tensor) -> dict[str, float]:
        device = unwrap(self.generator).weight.device
        a, b = a.to(device), b.to(device)
        d_b = unwrap(self.disc_b)
        for p in d_b.parameters():
            p.requires_grad_(False)
        try:
            with autocast(device, self.cfg.precision):
                fake = self.generator(a)
                loss_g = lsgan_generator(d_b(fake))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        finally:
            for p in d_b.parameters():
                p.requires_grad_(True)
        with autocast(device, self.cfg.precision):
            loss_d = lsgan_discriminator(self.disc_b(b), self.disc_b(fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.step += 1
        return {"L_G": float(loss_g.detach()), "L_D": float(loss_d.detach()),
                "lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}

    __call__ = train_step

    @torch.no_grad()
    def stylize(self, image: Tensor) -> Tensor:
        """Source [-1, 1] → target-styled values (unclipped: the map is affine), any size."""
        return self.models.generator(image)

    def preview_images(self, a: Tensor, b: Tensor) -> list[Tensor]:
        return [a, self.stylize(a.to(self.models.generator.weight.device)), b]

    # --- the whole training state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        m = self.models
        return {
            "generator": m.generator.state_dict(),
            "disc_b": m.disc_b.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.models
        m.generator.load_state_dict(state["generator"])
        m.disc_b.load_state_dict(state["disc_b"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.set_epoch(int(state["epoch"]))

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.state_dict())

