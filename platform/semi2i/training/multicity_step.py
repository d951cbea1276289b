"""One training step of the multi-city SemI2I model (works DDP-wrapped, like :class:`SemI2IStep`).

A step trains one ordered pair of different cities (i, j), drawn from ``seed + step`` alone (a resumed
run replays the same pairs; every worker trains the same pair on its own patches): SemI2I's six
passes with the shared networks, Eq. 1 with the profile's λ1..λ4 against the discriminator's channels
i and j, Eq. 2, and Algorithm 1 on cities i and j only. ``cfg.precision == "bf16"``: forward passes and
losses under bf16 autocast; weights, Adam and the style statistics stay fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from semi2i.config import SemI2IConfig
from semi2i.losses import generator_loss, lsgan_discriminator
from semi2i.models.multicity import MultiCityDiscriminator, MultiCityGenerator, MultiCityStyleStats
from semi2i.training.precision import autocast, use_tf32
from semi2i.training.ddp import unwrap
from semi2i.training.semi2i_step import Eq3Schedule


def pair_for_step(seed: int, step: int, num_cities: int) -> tuple[int, int]:
    """The ordered pair (i, j), i != j, that training step ``step`` uses: a function of seed and step only."""
    i, j = np.random.default_rng([seed, step, 7919]).choice(num_cities, size=2, replace=False)
    return int(i), int(j)


class MultiCityStep(Eq3Schedule):
    """One training step of the multi-city model, its optimizers and counters (works DDP-wrapped)."""

    def __init__(self, cfg: SemI2IConfig, cities: list[str], *, device: torch.device | str = "cpu",
                 wrap: Any = None, reduce_style_stats: Any = None):
        self.cfg, self.cities = cfg, list(cities)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            generator = MultiCityGenerator(cfg.in_bands_a, cfg.base_width, cfg.n_res_blocks, cfg.adain_eps, cfg.style_path)
            disc = MultiCityDiscriminator(cfg.in_bands_a, len(cities), cfg.disc_width)
        self.style = MultiCityStyleStats(len(cities), generator.style_channels, cfg.d_rate).to(device)
        use_tf32(cfg.tf32, device)
        wrap = wrap or (lambda m: m)
        self.generator, self.disc = wrap(generator.to(device)), wrap(disc.to(device))
        self.reduce_style_stats = reduce_style_stats or (lambda stats: stats)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=betas)
        self.step, self.epoch = 0, 0
        self.set_epoch(0)

    def train_step(self, a: Tensor, b: Tensor, i: int, j: int) -> dict[str, float]:
        """One update on a batch of city ``i`` (``a``) and city ``j`` (``b``), images in [-1, 1]."""
        self.begin_step()
        gen, disc = unwrap(self.generator), unwrap(self.disc)
        device = next(gen.parameters()).device
        a, b = a.to(device), b.to(device)
        d_params = list(disc.parameters())
        for p in d_params:
            p.requires_grad_(False)
        try:
            with autocast(device, self.cfg.precision):
                out = self.generator(a, b)
                # fake_b (j's content in i's style) is judged by channel i, fake_a by channel j (losses.py's D_A/D_B)
                terms = generator_loss(a, b, out, lambda x: disc(x)[:, i:i + 1], lambda x: disc(x)[:, j:j + 1],
                                       self.cfg.lambdas, self.cfg.lambda_tone)
            self.opt_g.zero_grad(set_to_none=True)
            terms["total"].backward()
            self.opt_g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        # Eq. 2 in one discriminator pass (instance norm is per sample, so batching changes nothing)
        with autocast(device, self.cfg.precision):
            scores = self.disc(torch.cat([a, out["fake_b"].detach().to(a.dtype), b, out["fake_a"].detach().to(a.dtype)]))
            real_i, fake_i, real_j, fake_j = scores.chunk(4)
            adv_d = (lsgan_discriminator(real_i[:, i:i + 1], fake_i[:, i:i + 1])
                     + lsgan_discriminator(real_j[:, j:j + 1], fake_j[:, j:j + 1]))
            loss_d = self.cfg.lambda_adv * adv_d
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        stats = torch.stack([out[k].detach().float().mean(dim=0) for k in ("mu_a", "sigma_a", "mu_b", "sigma_b")])
        mu_a, sigma_a, mu_b, sigma_b = self.reduce_style_stats(stats)
        self.style.update(i, mu_a, sigma_a)
        self.style.update(j, mu_b, sigma_b)
        self.step += 1
        values = {"L_G": terms["total"], "L_cross": terms["cross"], "L_self": terms["self"], "L_grad": terms["grad"],
                  "L_adv_G": terms["adv_g"], "L_tone": terms["tone"], "L_D": loss_d, "L_adv_D": adv_d}
        return {**{k: float(v.detach()) for k, v in values.items()}, "lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": unwrap(self.generator).state_dict(), "disc": unwrap(self.disc).state_dict(),
                "style": self.style.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "step": self.step, "epoch": self.epoch, "cities": self.cities, "config": dataclasses.asdict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["cities"]) != self.cities:
            raise ValueError(f"checkpoint cities {state['cities']} differ from {self.cities}")
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.disc).load_state_dict(state["disc"])
        self.style.load_state_dict(state["style"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.set_epoch(int(state["epoch"]))
