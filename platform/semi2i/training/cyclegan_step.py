"""One CycleGAN training step and its whole training state (single process or DDP under Ray Train).

The reference implementation's ``optimize_parameters`` with this project's naming (as SemI2I's):
``fake_a = G_AB(A)`` is A's content in B's style and is judged by D_B; ``fake_b = G_BA(B)`` by D_A.

1. generator update (D frozen): L_G = L_adv(D_B(fake_a)) + L_adv(D_A(fake_b))
   + λ·(|G_BA(fake_a) − A|₁ + |G_AB(fake_b) − B|₁) + λ·λ_idt·(|G_AB(B) − B|₁ + |G_BA(A) − A|₁),
   the identity term only when A and B have the same bands (G_AB(B) is undefined otherwise);
2. discriminator update on LSGAN's loss, real vs a fake drawn from an image pool of past fakes
   (``pool_size``; half the time the current fake, half a stored one it replaces).

The pools are per worker; their RNG is seeded per rank and saved, and under DDP ``state_dict`` gathers
every rank's pool (a collective: call it on all ranks), so a resumed run replays exactly.

``cfg.precision == "bf16"``: forward passes and losses under bf16 autocast; weights, Adam and the pooled
fakes stay fp32 (the pools are checkpointed).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semi2i.checkpoints import save_checkpoint
from semi2i.config import CycleGANConfig
from semi2i.losses import lsgan_discriminator, lsgan_generator
from semi2i.models.cyclegan import ResnetGenerator, init_weights
from semi2i.models.discriminator import PatchDiscriminator
from semi2i.training.precision import autocast, use_tf32
from semi2i.training.schedule import linear_decay_learning_rate
from semi2i.training.ddp import unwrap

LOSS_KEYS = ("L_G", "L_adv_G", "L_cycle", "L_idt", "L_D", "L_D_A", "L_D_B")
#: all_gather of one tensor across the workers (rank order); None = single process
Gather = Callable[[Tensor], list[Tensor]]


class ImagePool:
    """The reference ``ImagePool``: a buffer of up to ``size`` past fakes shown to the discriminator."""

    def __init__(self, size: int, seed: int):
        self.size = int(size)
        self.images: list[Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """(N, C, H, W) detached fakes → the N images the discriminator sees."""
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image[None]
            if len(self.images) < self.size:  # filling up: store and return the new fake
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.rng)) > 0.5:  # return an old fake, keep the new one
                i = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Tensor]:
        images = torch.cat(self.images) if self.images else torch.zeros(0)
        return {"images": images.cpu(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device | str = "cpu") -> None:
        images = state["images"]
        self.images = [images[i : i + 1].to(device) for i in range(images.shape[0])] if images.dim() == 4 else []
        self.rng.set_state(state["rng"].cpu())


@dataclass
class CycleGANModels:
    gen_ab: ResnetGenerator  # A → B style (fake A)
    gen_ba: ResnetGenerator  # B → A style (fake B)
    disc_a: PatchDiscriminator  # real A vs fake B
    disc_b: PatchDiscriminator  # real B vs fake A

    def to(self, device: torch.device | str) -> "CycleGANModels":
        for module in (self.gen_ab, self.gen_ba, self.disc_a, self.disc_b):
            module.to(device)
        return self


def build_models(cfg: CycleGANConfig) -> CycleGANModels:
    """Fresh networks, N(0, 0.02) initialised from ``cfg.seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen_ab = init_weights(ResnetGenerator(cfg.in_bands_a, cfg.in_bands_b, cfg.base_width, cfg.n_res_blocks))
        gen_ba = init_weights(ResnetGenerator(cfg.in_bands_b, cfg.in_bands_a, cfg.base_width, cfg.n_res_blocks))
        disc_a = init_weights(PatchDiscriminator(cfg.in_bands_a, cfg.disc_width))
        disc_b = init_weights(PatchDiscriminator(cfg.in_bands_b, cfg.disc_width))
    return CycleGANModels(gen_ab, gen_ba, disc_a, disc_b)


class CycleGANStep:
    """:class:`semi2i.training.gan.GANStep` for CycleGAN; networks may be DDP-wrapped.

    ``rank``/``world``/``gather`` only matter under DDP: the pools' seeds and the checkpointed pools.
    """

    loss_keys = LOSS_KEYS

    def __init__(
        self,
        cfg: CycleGANConfig,
        gen_ab: nn.Module,
        gen_ba: nn.Module,
        disc_a: nn.Module,
        disc_b: nn.Module,
        *,
        rank: int = 0,
        world: int = 1,
        gather: Gather | None = None,
    ):
        self.cfg = cfg
        self.gen_ab, self.gen_ba, self.disc_a, self.disc_b = gen_ab, gen_ba, disc_a, disc_b
        self.rank, self.world, self.gather = rank, world, gather
        use_tf32(cfg.tf32, self.device)
        if world > 1 and gather is None:
            raise ValueError("CycleGANStep under DDP needs gather= to checkpoint every worker's image pools")
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(itertools.chain(gen_ab.parameters(), gen_ba.parameters()), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(itertools.chain(disc_a.parameters(), disc_b.parameters()), lr=cfg.lr, betas=betas)
        seed = 7919 * cfg.seed + 2 * rank
        self.pool_fake_a = ImagePool(cfg.pool_size, seed)  # fakes in B's band space, for D_B
        self.pool_fake_b = ImagePool(cfg.pool_size, seed + 1)
        self.identity = cfg.in_bands_a == cfg.in_bands_b and cfg.lambda_identity > 0
        self.step = 0
        self.epoch = 0
        self.set_epoch(0)

    @classmethod
    def create(cls, cfg: CycleGANConfig, device: torch.device | str = "cpu") -> "CycleGANStep":
        m = build_models(cfg).to(device)
        return cls(cfg, m.gen_ab, m.gen_ba, m.disc_a, m.disc_b)

    @property
    def models(self) -> CycleGANModels:
        return CycleGANModels(unwrap(self.gen_ab), unwrap(self.gen_ba), unwrap(self.disc_a), unwrap(self.disc_b))

    @property
    def device(self) -> torch.device:
        return next(unwrap(self.gen_ab).parameters()).device

    @property
    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def set_epoch(self, epoch: int) -> None:
        lr = linear_decay_learning_rate(epoch, self.cfg.lr, self.cfg.epochs, self.cfg.decay_epoch)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        self.epoch = epoch

    def train_step(self, a: Tensor, b: Tensor) -> dict[str, float]:
        c = self.cfg
        a, b = a.to(self.device), b.to(self.device)
        d_a, d_b = unwrap(self.disc_a), unwrap(self.disc_b)
        d_params = list(d_a.parameters()) + list(d_b.parameters())
        for p in d_params:
            p.requires_grad_(False)
        try:
            with autocast(self.device, c.precision):
                fake_a = self.gen_ab(a)
                fake_b = self.gen_ba(b)
                adv = lsgan_generator(d_b(fake_a)) + lsgan_generator(d_a(fake_b))
                cycle = F.l1_loss(self.gen_ba(fake_a), a) + F.l1_loss(self.gen_ab(fake_b), b)
                if self.identity:
                    idt = F.l1_loss(self.gen_ab(b), b) + F.l1_loss(self.gen_ba(a), a)
                else:
                    idt = torch.zeros((), device=a.device)
                total_g = adv + c.lambda_cycle * cycle + c.lambda_cycle * c.lambda_identity * idt
            self.opt_g.zero_grad(set_to_none=True)
            total_g.backward()
            self.opt_g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)

        pooled_a = self.pool_fake_a.query(fake_a.detach().float())
        pooled_b = self.pool_fake_b.query(fake_b.detach().float())
        with autocast(self.device, c.precision):
            loss_d_b = lsgan_discriminator(self.disc_b(b), self.disc_b(pooled_a))
            loss_d_a = lsgan_discriminator(self.disc_a(a), self.disc_a(pooled_b))
            total_d = loss_d_a + loss_d_b
        self.opt_d.zero_grad(set_to_none=True)
        total_d.backward()
        self.opt_d.step()
        self.step += 1
        values = {"L_G": total_g, "L_adv_G": adv, "L_cycle": cycle, "L_idt": idt, "L_D": total_d,
                  "L_D_A": loss_d_a, "L_D_B": loss_d_b}
        losses = {k: float(v.detach()) for k, v in values.items()}
        losses["lr"] = self.lr
        return losses

    __call__ = train_step

    def stylize(self, image: Tensor) -> Tensor:
        """Test time: A's content in B's style (G_AB), any size, deterministic."""
        return self.models.gen_ab.translate(image)

    def preview_images(self, a: Tensor, b: Tensor) -> list[Tensor]:
        a, b = a.to(self.device), b.to(self.device)
        return [a, self.stylize(a), b, self.models.gen_ba.translate(b)]

    # --- the whole training state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizers, counters, config and every rank's image pools (a collective under DDP)."""
        m = self.models
        return {
            "gen_ab": m.gen_ab.state_dict(),
            "gen_ba": m.gen_ba.state_dict(),
            "disc_a": m.disc_a.state_dict(),
            "disc_b": m.disc_b.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "pools": self._gathered_pools(),
            "step": self.step,
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.cfg),
        }

    def _gathered_pools(self) -> list[dict[str, dict[str, Tensor]]]:
        """[rank 0's pools, rank 1's, ...]; every rank has the same pool fill (it depends on the step only)."""
        own = {"fake_a": self.pool_fake_a.state_dict(), "fake_b": self.pool_fake_b.state_dict()}
        if self.world == 1:
            return [own]
        per_rank: list[dict[str, dict[str, Tensor]]] = [{"fake_a": {}, "fake_b": {}} for _ in range(self.world)]
        for pool in ("fake_a", "fake_b"):
            for key, value in own[pool].items():
                gathered = self.gather(value) if value.numel() else [value] * self.world
                for r, v in enumerate(gathered):
                    per_rank[r][pool][key] = v.cpu()
        return per_rank

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.models
        for name in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
            getattr(m, name).load_state_dict(state[name])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        pools = state["pools"][self.rank % len(state["pools"])]
        self.pool_fake_a.load_state_dict(pools["fake_a"], self.device)
        self.pool_fake_b.load_state_dict(pools["fake_b"], self.device)
        self.step = int(state["step"])
        self.set_epoch(int(state["epoch"]))

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.state_dict())

