"""Multi-city adaptation: several source cities to several target cities in one run, one model for all.

Design: ONE shared SemI2I encoder and ONE shared decoder (the :class:`~semi2i.models.semi2i.Encoder` /
:class:`~semi2i.models.semi2i.Decoder` classes, low-level skips included) for every city, per-city
*global* style statistics (Algorithm 1 run separately for each city, all-reduced across Ray Train
workers like :func:`semi2i.training.distributed.fit_semi2i`), and one PatchGAN with one output
channel per city (channel c judges "real city c" vs "translated into city c").

Why not one encoder/decoder per city (the paper's two-domain layout, N times)? In SemI2I the style of
a domain *is* its embedding's μ, σ, injected by AdaIN; the encoder/decoder pair only has to separate
content from those statistics and render them back, which does not depend on the city. Sharing them:

* parameters grow O(1) in the number of cities instead of O(N) encoders/decoders (plus N·(C+C)
  statistics and N discriminator output channels);
* every city's patches train the same encoder, so each city's content features see N times the data;
* one model serves every target: stylizing source s into target t is
  ``dec(AdaIN(enc(x_s), μ_t, σ_t), low_s)``, so a new (source, target) pair costs no new network.

The price: one decoder must render every city, so all cities need the same band count (checked
before any work: a one-line :class:`ConfigError`). Mixed band counts need the two-domain pipeline.

A training step samples an ordered pair of different cities (i, j) from ``seed + step`` (a resumed run
replays the same pairs; every worker trains the same pair, on its own patches), then runs SemI2I's
six passes with the shared networks (fake_i = dec(AdaIN(enc(x_i), μ_j, σ_j), low_i), self and cross
reconstruction), Eq. 1 with the profile's λ1..λ4 (``semi2i`` section) against D's channels i and j,
Eq. 2 for D, and Algorithm 1 on cities i and j only.

Stages of :class:`MultiCityRun` (each resumable, skipped when its outputs exist)::

    ingest -> unet_source (one per source) -> multicity (multicity.pt) -> stylize (every s != t pair)
    -> finetune (the source's U-net on the stylized source) -> segment (+ score) -> report

Run folder: ``stores/<city>.zarr``, ``unet_source_<city>.pt``, ``multicity.pt``,
``stylized/<s>_to_<t>/``, ``unet_<s>_to_<t>.pt``, ``maps/<method>/<s>_to_<t>/``,
``scores/<s>_to_<t>/<method>.json``, ``report.json``, ``report.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from semi2i.config import ConfigError, Profile, SemI2IConfig, load_profile
from semi2i.data.normalize import BandStats
from semi2i.data.store import CityStore
from semi2i.losses import generator_loss, lsgan_discriminator
from semi2i.models.discriminator import PatchDiscriminator
from semi2i.models.semi2i import Decoder, Encoder, _check_input, _pad_to_multiple, adain, channel_stats
from semi2i.stylizers.base import Stylizer
from semi2i.training.distributed import Scaling
from semi2i.training.schedule import semi2i_learning_rate

log = logging.getLogger(__name__)

MULTICITY_CHECKPOINT = "multicity.pt"
METHOD = "semi2i_multicity"
REPORT_METHODS = ("source_only", METHOD)
STAGES = ("ingest", "unet_source", "multicity", "stylize", "finetune", "segment", "report")
DEMO_CLASSES = ["building", "road", "vegetation", "water", "land"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------------
# the model


class MultiCityStyleStats(nn.Module):
    """Global μ, σ of every city's embeddings (rows = cities), each row estimated by Algorithm 1.

    A separate module (not inside the DDP-wrapped generator), as :class:`GlobalStyleStats`.
    """

    def __init__(self, num_cities: int, channels: int, d_rate: float = 0.95):
        super().__init__()
        self.d_rate = float(d_rate)
        self.register_buffer("mu", torch.zeros(num_cities, channels))  # Algorithm 1: μ_g ← 0, σ_g ← 0
        self.register_buffer("sigma", torch.zeros(num_cities, channels))

    @torch.no_grad()
    def update(self, city: int, mu: Tensor, sigma: Tensor) -> None:
        """Algorithm 1 for ``city`` (one iteration that saw it): g ← d·g + (1 − d)·(this step's value)."""
        d = self.d_rate
        for buf, value in ((self.mu, mu), (self.sigma, sigma)):
            if value.shape != buf.shape[1:]:
                raise ValueError(f"style statistic of shape {tuple(value.shape)}, expected {tuple(buf.shape[1:])}")
            buf[city].mul_(d).add_((1.0 - d) * value.to(buf))

    def style(self, city: int) -> tuple[Tensor, Tensor]:
        return self.mu[city], self.sigma[city]


class MultiCityGenerator(nn.Module):
    """One encoder and one decoder shared by every city; city styles come from AdaIN statistics."""

    def __init__(self, bands: int, width: int = 64, n_res_blocks: int = 4, eps: float = 1e-5):
        super().__init__()
        self.bands, self.eps = bands, eps
        self.enc = Encoder(bands, width, n_res_blocks)
        self.dec = Decoder(bands, width)
        self.style_channels = self.enc.out_channels

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """SemI2I's six passes for a batch of city i (``a``) and one of city j (``b``), shared networks.

        Same keys as :meth:`SemI2IGenerator.forward`, so :func:`semi2i.losses.generator_loss` applies.
        """
        for name, x in (("a", a), ("b", b)):
            _check_input(x, self.bands, name, training=True)
        eps = self.eps
        emb_a, low_a = self.enc(a)
        emb_b, low_b = self.enc(b)
        mu_a, sigma_a = channel_stats(emb_a, eps)
        mu_b, sigma_b = channel_stats(emb_b, eps)
        fake_a = self.dec(adain(emb_a, mu_b, sigma_b, eps), low_a)  # i's content in j's style
        fake_b = self.dec(adain(emb_b, mu_a, sigma_a, eps), low_b)
        self_a = self.dec(emb_a, low_a)
        self_b = self.dec(emb_b, low_b)
        emb_fa, low_fa = self.enc(fake_a)
        emb_fb, low_fb = self.enc(fake_b)
        mu_fa, sigma_fa = channel_stats(emb_fa, eps)
        mu_fb, sigma_fb = channel_stats(emb_fb, eps)
        cross_a = self.dec(adain(emb_fa, mu_fb, sigma_fb, eps), low_fa)
        cross_b = self.dec(adain(emb_fb, mu_fa, sigma_fa, eps), low_fb)
        return {"fake_a": fake_a, "fake_b": fake_b, "self_a": self_a, "self_b": self_b, "cross_a": cross_a,
                "cross_b": cross_b, "mu_a": mu_a, "sigma_a": sigma_a, "mu_b": mu_b, "sigma_b": sigma_b}

    @torch.no_grad()
    def stylize(self, image: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
        """Test time: ``image``'s content with the (global, (C,)) style ``mu``, ``sigma``; any H×W, eval mode."""
        _check_input(image, self.bands, "source", training=False)
        was_training = self.training
        self.eval()
        try:
            h, w = image.shape[-2:]
            emb, low = self.enc(_pad_to_multiple(image))
            out = self.dec(adain(emb, mu.to(emb), sigma.to(emb), self.eps), low)
        finally:
            self.train(was_training)
        return out[..., :h, :w]


class MultiCityDiscriminator(PatchDiscriminator):
    """CycleGAN's 70×70 PatchGAN with one output channel per city (LSGAN scores, no sigmoid)."""

    def __init__(self, bands: int, num_cities: int, ndf: int = 64, n_layers: int = 3):
        super().__init__(bands, ndf, n_layers)
        last = self.net[-1]
        self.net[-1] = nn.Conv2d(last.in_channels, num_cities, 4, stride=1, padding=1)


def pair_for_step(seed: int, step: int, num_cities: int) -> tuple[int, int]:
    """The ordered pair (i, j), i != j, that training step ``step`` uses: a function of seed and step only."""
    i, j = np.random.default_rng([seed, step, 7919]).choice(num_cities, size=2, replace=False)
    return int(i), int(j)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


class MultiCityStep:
    """One training step of the multi-city model, its optimizers and counters (works DDP-wrapped)."""

    def __init__(self, cfg: SemI2IConfig, cities: list[str], *, device: torch.device | str = "cpu",
                 wrap: Any = None, reduce_style_stats: Any = None):
        self.cfg, self.cities = cfg, list(cities)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            generator = MultiCityGenerator(cfg.in_bands_a, cfg.base_width, cfg.n_res_blocks, cfg.adain_eps)
            disc = MultiCityDiscriminator(cfg.in_bands_a, len(cities), cfg.disc_width)
        self.style = MultiCityStyleStats(len(cities), generator.style_channels, cfg.d_rate).to(device)
        wrap = wrap or (lambda m: m)
        self.generator, self.disc = wrap(generator.to(device)), wrap(disc.to(device))
        self.reduce_style_stats = reduce_style_stats or (lambda stats: stats)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=betas)
        self.step, self.epoch = 0, 0
        self.set_epoch(0)

    @property
    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def set_epoch(self, epoch: int) -> None:
        lr = semi2i_learning_rate(epoch, self.cfg.lr, self.cfg.epochs, self.cfg.decay_epoch)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        self.epoch = epoch

    def train_step(self, a: Tensor, b: Tensor, i: int, j: int) -> dict[str, float]:
        """One update on a batch of city ``i`` (``a``) and city ``j`` (``b``), images in [-1, 1]."""
        gen, disc = _unwrap(self.generator), _unwrap(self.disc)
        device = next(gen.parameters()).device
        a, b = a.to(device), b.to(device)
        d_params = list(disc.parameters())
        for p in d_params:
            p.requires_grad_(False)
        try:
            out = self.generator(a, b)
            # fake_b (j's content in i's style) is judged by channel i, fake_a by channel j (losses.py's D_A/D_B)
            terms = generator_loss(a, b, out, lambda x: disc(x)[:, i:i + 1], lambda x: disc(x)[:, j:j + 1], self.cfg.lambdas)
            self.opt_g.zero_grad(set_to_none=True)
            terms["total"].backward()
            self.opt_g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        # Eq. 2 in one discriminator pass (instance norm is per sample, so batching changes nothing)
        scores = self.disc(torch.cat([a, out["fake_b"].detach(), b, out["fake_a"].detach()]))
        real_i, fake_i, real_j, fake_j = scores.chunk(4)
        adv_d = (lsgan_discriminator(real_i[:, i:i + 1], fake_i[:, i:i + 1])
                 + lsgan_discriminator(real_j[:, j:j + 1], fake_j[:, j:j + 1]))
        loss_d = self.cfg.lambda_adv * adv_d
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        stats = torch.stack([out[k].detach().mean(dim=0) for k in ("mu_a", "sigma_a", "mu_b", "sigma_b")])
        mu_a, sigma_a, mu_b, sigma_b = self.reduce_style_stats(stats)
        self.style.update(i, mu_a, sigma_a)
        self.style.update(j, mu_b, sigma_b)
        self.step += 1
        values = {"L_G": terms["total"], "L_cross": terms["cross"], "L_self": terms["self"], "L_grad": terms["grad"],
                  "L_adv_G": terms["adv_g"], "L_D": loss_d, "L_adv_D": adv_d}
        return {**{k: float(v.detach()) for k, v in values.items()}, "lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": _unwrap(self.generator).state_dict(), "disc": _unwrap(self.disc).state_dict(),
                "style": self.style.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "step": self.step, "epoch": self.epoch, "cities": self.cities, "config": dataclasses.asdict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["cities"]) != self.cities:
            raise ValueError(f"checkpoint cities {state['cities']} differ from {self.cities}")
        _unwrap(self.generator).load_state_dict(state["generator"])
        _unwrap(self.disc).load_state_dict(state["disc"])
        self.style.load_state_dict(state["style"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.set_epoch(int(state["epoch"]))


def load_multicity(path: str | Path, map_location: str = "cpu") -> tuple[MultiCityGenerator, MultiCityStyleStats, list[str], SemI2IConfig]:
    """The generator (eval), the per-city global statistics, the city names and the config of a checkpoint."""
    from semi2i.training.semi2i_step import load_checkpoint

    state = load_checkpoint(path, map_location)
    cfg = SemI2IConfig(**state["config"])
    generator = MultiCityGenerator(cfg.in_bands_a, cfg.base_width, cfg.n_res_blocks, cfg.adain_eps)
    generator.load_state_dict(state["generator"])
    style = MultiCityStyleStats(len(state["cities"]), generator.style_channels, cfg.d_rate)
    style.load_state_dict(state["style"])
    return generator.eval(), style, list(state["cities"]), cfg


class MultiCityStylizer(Stylizer):
    """Raw pixels of ``source`` → raw pixels in ``target``'s style: shared generator, target's global μ, σ."""

    name = METHOD

    def __init__(self, generator: MultiCityGenerator, style: MultiCityStyleStats, cities: list[str], source: str, target: str,
                 source_stats: BandStats, target_stats: BandStats, *, tile_size: int = 256, overlap: int = 32,
                 batch_tiles: int = 4):
        for city in (source, target):
            if city not in cities:
                raise ValueError(f"city {city!r} is not in the model (cities: {', '.join(cities)})")
        self.in_bands = self.out_bands = generator.bands
        for which, stats in (("source", source_stats), ("target", target_stats)):
            if stats.num_bands != generator.bands:
                raise ValueError(f"{which} band stats have {stats.num_bands} bands, the model expects {generator.bands}")
        self.generator = generator.eval()
        self.mu, self.sigma = (t.clone() for t in style.style(cities.index(target)))
        self.source_stats, self.target_stats = source_stats, target_stats
        self.tile_size, self.overlap, self.batch_tiles = tile_size, overlap, batch_tiles

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        from semi2i.tiling import blend_tiles

        fake = blend_tiles(image, lambda tiles: self.generator.stylize(tiles, self.mu, self.sigma), self.out_bands,
                           tile=self.tile_size, overlap=self.overlap, batch_tiles=self.batch_tiles,
                           prepare=self.source_stats.to_unit_range)
        return self.target_stats.from_unit_range(fake)


# ---------------------------------------------------------------------------------------------------
# Ray Train


def multicity_worker_loop(config: dict) -> dict:
    """Ray Train worker: one patch of each of the step's two cities per worker per step."""
    from semi2i.data.patches import city_windows, step_windows
    from semi2i.data.store import open_store
    from semi2i.data.stream import read_patches, window_columns
    from semi2i.training.distributed import _allreduce_mean, _crash_once, _Progress, _report, _restored_state, _setup_worker, _wrap
    from semi2i.training.semi2i_step import save_checkpoint
    from semi2i.training.semi2i_trainer import steps_per_epoch

    rank, world, device = _setup_worker(config["threads"])
    cfg = SemI2IConfig(**config["cfg"])
    run_dir = Path(config["run_dir"])
    cities = list(config["cities"])
    step = MultiCityStep(cfg, cities, device=device, wrap=lambda m: _wrap(m, world),
                         reduce_style_stats=_allreduce_mean if world > 1 else None)
    restored = _restored_state(MULTICITY_CHECKPOINT)
    if restored is not None:
        step.load_state_dict(restored)
    windows = [city_windows(open_store(s), cfg.patch_size, config["overlap"]) for s in config["stores"]]
    fewest = min(len(w) for w in windows)
    spe = max(1, steps_per_epoch(cfg, fewest, fewest) // world)
    total = config.get("max_steps") or cfg.epochs * spe
    progress = _Progress("multicity", run_dir, rank, total, step.step, "steps", 1)

    def batch(city: int, at: int) -> Tensor:
        picked = step_windows(windows[city], cfg.seed + 1_000_003 * city, at, rank, world, 1)
        return torch.from_numpy(read_patches(window_columns(picked), "unit")["image"])

    losses: dict[str, float] = {}
    while step.step < total:
        at = step.step
        i, j = pair_for_step(cfg.seed, at, len(cities))
        step.set_epoch(at // spe)
        losses = step.train_step(batch(i, at), batch(j, at), i, j)
        done = step.step
        checkpoint = done % cfg.checkpoint_every == 0 or done == total
        if done % cfg.log_every == 0 or checkpoint:
            metrics = {**losses, "step": done, "epoch": step.epoch, "steps_per_s": progress.rate(done)}
            progress.log(done, metrics)
            if rank == 0:
                log.info("multicity step %d: pair %s -> %s", done, cities[i], cities[j])
            state = step.state_dict() if checkpoint else None
            _report(metrics, rank, (lambda: state) if checkpoint else None, MULTICITY_CHECKPOINT)
        _crash_once(config, done)
    progress.close()
    state = step.state_dict()
    if rank == 0:
        save_checkpoint(run_dir / MULTICITY_CHECKPOINT, state)
    return {"step": step.step, "epoch": step.epoch, "losses": losses, "steps_per_s": progress.rate(step.step)}


def fit_multicity(cfg: SemI2IConfig, stores: dict[str, str | Path], run_dir: str | Path, *, overlap: int = 32,
                  scaling: Scaling = Scaling(), max_steps: int | None = None, crash_at_step: int | None = None) -> dict:
    """Train the multi-city model on ``stores`` ({city: store}, >= 2, equal band counts) with Ray Train;
    writes ``<run_dir>/multicity.pt`` and returns rank 0's summary."""
    from semi2i.data.store import open_store
    from semi2i.training.distributed import _fit

    if len(stores) < 2:
        raise ValueError(f"multi-city training needs at least 2 cities, got {list(stores)}")
    bands = {name: open_store(str(p)).num_bands for name, p in stores.items()}
    if len(set(bands.values())) != 1:
        raise ConfigError(f"the multi-city model shares one encoder/decoder and needs equal band counts, got {bands}")
    cfg = dataclasses.replace(cfg, in_bands_a=next(iter(bands.values())), in_bands_b=next(iter(bands.values())))
    config = {"cfg": dataclasses.asdict(cfg), "cities": list(stores), "stores": [str(Path(p).resolve()) for p in stores.values()],
              "overlap": overlap, "max_steps": max_steps, "crash_at_step": crash_at_step}
    return _fit(multicity_worker_loop, config, Path(run_dir), "multicity", scaling).return_value


def unet_jobs_worker_loop(config: dict) -> dict:
    """Ray Train worker: several U-net trainings/fine-tunes one after the other in ONE worker group.

    Each job is what :func:`semi2i.training.distributed.fit_unet` hands its own loop, trained the same way
    (same data order, DDP, checkpoints); a job whose output exists is skipped, so a restarted or re-run
    stage resumes at the first unfinished job, and each job's Ray checkpoint file carries the job's
    output name, so a restore never hands one job another's state. One launch instead of one per job
    matters here: N sources x N targets fine-tunes, and a Ray Train launch costs seconds.
    """
    from semi2i.data.patches import city_windows
    from semi2i.data.store import open_store
    from semi2i.models.unet import UNet
    from semi2i.training.distributed import (_average_buffers, _crash_once, _Progress, _report, _setup_worker, _wrap,
                                             patch_batches, unet_metadata)
    from semi2i.config import UNetTrainConfig
    from semi2i.training.semi2i_step import load_checkpoint, save_checkpoint
    from semi2i.training.unet_step import UNetStep

    import ray.train

    rank, world, device = _setup_worker(config["threads"])
    run_dir = Path(config["run_dir"])
    restore = ray.train.get_checkpoint()
    done_jobs = 0
    for job in config["jobs"]:
        job = {**job, "run_dir": config["run_dir"]}
        name = job["output"]
        if (run_dir / name).exists():
            continue
        cfg = UNetTrainConfig(**job["cfg"])
        stats = BandStats.from_attrs(job["stats"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(job["seed"])
            model = UNet(job["in_bands"], job["num_classes"], cfg.base_width, cfg.depth)
        if job.get("init"):
            model.load_state_dict(load_checkpoint(job["init"])["model"])
        model.to(device)
        step = UNetStep(_wrap(model, world), lr=cfg.lr, ignore_index=job["ignore_index"])
        if restore is not None:
            with restore.as_directory() as d:
                if (Path(d) / name).exists():
                    step.load_state_dict(load_checkpoint(Path(d) / name))
        windows = [w for store in job["stores"] for w in city_windows(open_store(store), cfg.patch_size, job["overlap"])]
        per_worker = max(1, cfg.batch_size // world)
        total = job["steps"]
        progress = _Progress(job["stage"], run_dir, rank, total, step.iteration, "samples", per_worker * world)

        def state() -> dict:
            saved = step.state_dict()
            saved.update(unet_metadata(job))
            return saved

        for batch in patch_batches(windows, seed=job["seed"], start_step=step.iteration, end_step=total, rank=rank,
                                   world=world, per_worker=per_worker, normalize="zscore", stats=stats):
            values = step.step(batch["image"], batch["label"])
            done = step.iteration
            checkpoint = done % job["checkpoint_every"] == 0 or done == total
            if done % job["log_every"] == 0 or checkpoint:
                metrics = {**{k: float(v) for k, v in values.items()}, "step": done, "samples_per_s": progress.rate(done)}
                progress.log(done, metrics)
                if checkpoint:
                    _average_buffers(model, world)
                _report(metrics, rank, state if checkpoint else None, name)
            _crash_once(job, done)
        progress.close()
        if rank == 0:
            save_checkpoint(run_dir / name, state())
        if world > 1:
            torch.distributed.barrier()  # the next job's skip test must see this output on every rank
        done_jobs += 1
    return {"jobs": done_jobs}


def unet_job(cfg: Any, stores: list[str | Path], *, stage: str, output: str, steps: int | None = None,
             init: str | Path | None = None, overlap: int = 32, seed: int = 0, checkpoint_every: int = 100,
             log_every: int = 10) -> dict:
    """One job for :func:`fit_unets`: the config :func:`semi2i.training.distributed.fit_unet` would build."""
    from semi2i.data.store import open_store
    from semi2i.training.semi2i_step import load_checkpoint

    opened = [open_store(str(s)) for s in stores]
    first = opened[0]
    for s in opened:
        if not s.has_labels:
            raise ValueError(f"{s.path}: U-net training needs labels, this store has none")
    stats = BandStats.from_attrs(load_checkpoint(init)["stats"]) if init is not None else first.band_stats
    return {"cfg": dataclasses.asdict(cfg), "stores": [str(Path(s).resolve()) for s in stores], "in_bands": first.num_bands,
            "num_classes": first.num_classes, "class_names": first.class_names, "ignore_index": first.ignore_index,
            "stats": stats.to_attrs(), "init": str(Path(init).resolve()) if init else None,
            "steps": steps if steps is not None else (cfg.finetune_steps if init else cfg.train_steps), "output": output,
            "overlap": overlap, "seed": seed, "checkpoint_every": checkpoint_every, "log_every": log_every, "stage": stage,
            "crash_at_step": None}


def fit_unets(jobs: list[dict], run_dir: str | Path, stage: str, scaling: Scaling = Scaling()) -> dict | None:
    """Run the :func:`unet_job` jobs whose outputs are missing, in one Ray Train run named ``stage``."""
    from semi2i.training.distributed import _fit

    run_dir = Path(run_dir)
    todo = [j for j in jobs if not (run_dir / j["output"]).exists()]
    if not todo:
        return None
    return _fit(unet_jobs_worker_loop, {"jobs": todo}, run_dir, stage, scaling).return_value


# ---------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class MultiCityConfig:
    name: str
    cities: dict  # name -> CitySpec (empty for the synthetic demo until ingest writes it)
    sources: list[str]
    targets: list[str]
    classes: list[str]
    profile: Profile
    seed: int = 0
    workers: int = 1
    gpu: bool = False
    synthetic: dict | None = None
    raw: dict = field(default_factory=dict)

    @property
    def city_names(self) -> list[str]:
        """Every city the model trains on: sources and targets, in first-mention order."""
        return list(dict.fromkeys([*self.sources, *self.targets]))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(s, t) for s in self.sources for t in self.targets if s != t]


_TOP_KEYS = {"name", "profile", "cities", "sources", "targets", "classes", "overrides", "seed", "workers", "gpu", "synthetic"}


def load_multicity_config(path: str | Path | None, *, profile: str | None = None, seed: int | None = None,
                          workers: int | None = None, gpu: bool | None = None) -> MultiCityConfig:
    """Read and validate a multi-city YAML config (``None``: the built-in 3-city synthetic demo).

    Every problem (unknown keys or city names, missing files, unequal band counts) is a
    :class:`ConfigError` raised before any work starts.
    """
    from semi2i.pipeline import _city, read_config_file, run_settings

    if path is None:
        data: dict = {"name": "multicity_demo", "synthetic": {}}
        origin = "<built-in multi-city demo>"
    else:
        origin = str(path)
        data = read_config_file(path)
        data.setdefault("name", Path(path).stem)
    errors = [f"{origin}: unknown key '{k}' (known: {', '.join(sorted(_TOP_KEYS))})" for k in data if k not in _TOP_KEYS]

    synthetic = data.get("synthetic")
    cities: dict = {}
    if synthetic is not None:
        from semi2i.data.synthetic import MULTICITY_DEMO

        if not isinstance(synthetic, dict) or set(synthetic) - {"size", "rasters", "seed"}:
            errors.append(f"{origin}: 'synthetic' takes size, rasters, seed")
        if "cities" in data:
            errors.append(f"{origin}: 'cities' and 'synthetic' exclude each other")
        known = [c for c, _ in MULTICITY_DEMO]
        classes_default: list[str] | None = list(DEMO_CLASSES)
    else:
        raw_cities = data.get("cities")
        if not isinstance(raw_cities, dict) or len(raw_cities) < 2:
            errors.append(f"{origin}: 'cities' must map at least two city names to {{images, labels, palette|classes}}")
            raw_cities = {}
        known = [str(c) for c in raw_cities]
        classes_default = None
    sources = data.get("sources", known if synthetic is not None else None)
    targets = data.get("targets", known if synthetic is not None else None)
    for key, value in (("sources", sources), ("targets", targets)):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            errors.append(f"{origin}: '{key}' must be a non-empty list of city names")
            continue
        for name in value:
            if name not in known:
                errors.append(f"{origin}: unknown city '{name}' in {key} (cities: {', '.join(known) or 'none'})")
    sources = sources if isinstance(sources, list) else []
    targets = targets if isinstance(targets, list) else []
    if sources and targets and not any(s != t for s in sources for t in targets):
        errors.append(f"{origin}: no (source, target) pair of different cities")
    if synthetic is None:
        for name, spec in raw_cities.items():
            if not _NAME.match(str(name)):
                errors.append(f"{origin}: city name '{name}' must be letters, digits, '_', '.', '-' (it names files)")
            city = _city(spec, f"cities.{name}", origin, errors, require_labels=name in sources)
            if city is not None:
                cities[str(name)] = dataclasses.replace(city, name=str(name))
    classes = data.get("classes", classes_default)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        errors.append(f"{origin}: 'classes' must be a non-empty list of class names")
    try:
        prof = load_profile(profile or data.get("profile", "quick"), data.get("overrides") or {})
    except ConfigError as exc:
        errors.append(f"{origin}: {exc}")
        prof = None
    values = run_settings(data, origin, errors, seed=seed, workers=workers, gpu=gpu)
    if not errors and cities:
        used = list(dict.fromkeys([*sources, *targets]))
        bands = _band_counts({c: cities[c] for c in used}, origin, errors)
        if not errors and len(set(bands.values())) > 1:
            shown = ", ".join(f"{c}: {n}" for c, n in bands.items())
            errors.append(f"{origin}: cities have different band counts ({shown}); the multi-city model shares one "
                          "encoder/decoder and needs equal band counts (use jobs/adapt.py per pair instead)")
    if errors:
        raise ConfigError("\n".join(errors))
    return MultiCityConfig(name=str(data["name"]), cities=cities, sources=list(sources), targets=list(targets),
                           classes=list(classes), profile=prof, seed=values["seed"], workers=values["workers"],
                           gpu=values["gpu"], synthetic=synthetic, raw=data)


def _band_counts(cities: dict, origin: str, errors: list[str]) -> dict[str, int]:
    """Each city's band count, from the header of its first image."""
    import rasterio

    from semi2i import io_paths

    bands = {}
    for name, city in cities.items():
        try:
            first = io_paths.expand(city.images)[0]
            with rasterio.open(io_paths.gdal_path(first)) as src:
                bands[name] = src.count
        except (FileNotFoundError, IndexError) as exc:
            errors.append(f"{origin}: 'cities.{name}.images': {exc or 'no images'}")
        except Exception as exc:  # unreadable raster
            errors.append(f"{origin}: 'cities.{name}.images': cannot read ({exc})")
    return bands


# ---------------------------------------------------------------------------------------------------
# the run


class MultiCityRun:
    """The stages of one multi-city adaptation in ``run_dir``; each is skipped when its outputs exist."""

    def __init__(self, cfg: MultiCityConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.scaling = Scaling(num_workers=cfg.workers, use_gpu=cfg.gpu)
        self.timings: dict[str, float] = {}

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def store(self, city: str) -> CityStore:
        path = self.path("stores", f"{city}.zarr")
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (run the ingest stage first)")
        return CityStore(path)

    @staticmethod
    def pair_key(source: str, target: str) -> str:
        return f"{source}_to_{target}"

    def unet_path(self, method: str, source: str, target: str) -> Path:
        return self.path(f"unet_source_{source}.pt" if method == "source_only" else f"unet_{self.pair_key(source, target)}.pt")

    def run(self) -> dict | None:
        from semi2i.pipeline import _atomic_text

        self.run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**self.cfg.raw, "profile": self.cfg.profile.name, "seed": self.cfg.seed, "workers": self.cfg.workers,
                    "gpu": self.cfg.gpu, "resolved_profile": dataclasses.asdict(self.cfg.profile)}
        _atomic_text(self.path("config.resolved.yaml"), yaml.safe_dump(resolved, sort_keys=False))
        for stage in STAGES:
            started = time.perf_counter()
            getattr(self, f"stage_{stage}")()
            self.timings[stage] = time.perf_counter() - started
            log.info("stage %s: %.1f s", stage, self.timings[stage])
        report = self.path("report.json")
        return json.loads(report.read_text()) if report.exists() else None

    def stage_ingest(self) -> None:
        from semi2i.data.ingest import ingest_city
        from semi2i.pipeline import CitySpec

        cfg = self.cfg
        specs = dict(cfg.cities)
        if cfg.synthetic is not None:
            from semi2i.data.synthetic import make_multicity_demo

            syn = cfg.synthetic
            files = make_multicity_demo(self.path("data"), size=syn.get("size", 512), rasters_per_city=syn.get("rasters", 2),
                                        seed=syn.get("seed", 0))
            classes = str(self.path("data", "classes.json"))
            specs = {c: CitySpec(c, [str(p) for p in f.images], [str(p) for p in f.labels], classes=classes)
                     for c, f in files.items()}
        for city in cfg.city_names:
            out = self.path("stores", f"{city}.zarr")
            if out.exists():
                continue
            spec = specs[city]
            log.info("stage ingest: %s", city)
            store = ingest_city(spec.images, out, labels=spec.labels, palette=spec.palette, classes=spec.classes, name=city,
                                nodata=spec.nodata, min_size=cfg.profile.patch_size)
            if store.has_labels and store.class_names != cfg.classes:
                raise ConfigError(f"{out}: classes {store.class_names} differ from the config's {cfg.classes}")
        bands = {c: self.store(c).num_bands for c in cfg.city_names}
        if len(set(bands.values())) > 1:
            raise ConfigError(f"cities have different band counts {bands}; the multi-city model needs equal band counts")

    def stage_unet_source(self) -> None:
        p = self.cfg.profile
        jobs = [unet_job(p.unet, [self.store(source).path], stage=f"unet_source_{source}",
                         output=self.unet_path("source_only", source, "").name, overlap=p.overlap, seed=self.cfg.seed,
                         checkpoint_every=max(1, p.unet.train_steps // 4))
                for source in self.cfg.sources if not self.unet_path("source_only", source, "").exists()]
        if jobs:
            log.info("stage unet_source: %s", ", ".join(j["stage"] for j in jobs))
            fit_unets(jobs, self.run_dir, "unet_source", self.scaling)

    def stage_multicity(self) -> None:
        if self.path(MULTICITY_CHECKPOINT).exists():
            return
        cfg = dataclasses.replace(self.cfg.profile.semi2i, seed=self.cfg.seed)
        log.info("stage multicity: one shared generator for %s", ", ".join(self.cfg.city_names))
        fit_multicity(cfg, {c: self.store(c).path for c in self.cfg.city_names}, self.run_dir,
                      overlap=self.cfg.profile.overlap, scaling=self.scaling)

    def stage_stylize(self) -> None:
        from semi2i.stylize import stylize_city

        todo = [(s, t) for s, t in self.cfg.pairs if not self.path("stylized", self.pair_key(s, t), "store.zarr").exists()]
        if not todo:
            return
        generator, style, cities, cfg = load_multicity(self.path(MULTICITY_CHECKPOINT))
        for source, target in todo:
            src, tgt = self.store(source), self.store(target)
            log.info("stage stylize: %s -> %s", source, target)
            stylizer = MultiCityStylizer(generator, style, cities, source, target, src.band_stats, tgt.band_stats,
                                         tile_size=cfg.patch_size, overlap=self.cfg.profile.overlap)
            stylize_city(src, stylizer, self.path("stylized", self.pair_key(source, target)), target_dtype=tgt.dtype,
                         name=f"{source}-{METHOD}-{target}", overwrite=True)

    def stage_finetune(self) -> None:
        p = self.cfg.profile
        jobs = [unet_job(p.unet, [self.path("stylized", self.pair_key(s, t), "store.zarr")],
                         stage=f"finetune_{self.pair_key(s, t)}", output=self.unet_path(METHOD, s, t).name,
                         init=self.unet_path("source_only", s, t), steps=p.unet.finetune_steps, overlap=p.overlap,
                         seed=self.cfg.seed, checkpoint_every=max(1, p.unet.finetune_steps // 2))
                for s, t in self.cfg.pairs if not self.unet_path(METHOD, s, t).exists()]
        if jobs:  # each source's U-net fine-tuned on its stylized copy for each target, one Ray Train run
            log.info("stage finetune: %s", ", ".join(j["stage"] for j in jobs))
            fit_unets(jobs, self.run_dir, "finetune", self.scaling)

    def stage_segment(self) -> None:
        from semi2i.mapping import map_region, read_classes
        from semi2i.metrics import confusion_matrix, scores
        from semi2i.pipeline import _atomic_text

        for source, target in self.cfg.pairs:
            tgt = self.store(target)
            for method in REPORT_METHODS:
                key = self.pair_key(source, target)
                score_path = self.path("scores", key, f"{method}.json")
                if score_path.exists() or not self.unet_path(method, source, target).exists():
                    continue
                out = self.path("maps", method, key)
                if not (out / "job.json").exists():
                    log.info("stage segment: %s with %s's %s U-net", target, source, method)
                    map_region(tgt.path, self.unet_path(method, source, target), out, overlap=self.cfg.profile.overlap,
                               use_ray=self.cfg.workers > 1 or self.cfg.gpu, workers=self.cfg.workers)
                result = {"source": source, "target": target, "method": method,
                          "checkpoint": str(self.unet_path(method, source, target)), "maps": str(out)}
                if tgt.has_labels:
                    cm = sum(confusion_matrix(read_classes(out, r.id), tgt.dataset(r.id).label.values, tgt.num_classes,
                                              tgt.ignore_index) for r in tgt.rasters)
                    result.update(confusion_matrix=cm.tolist(), **scores(cm, tgt.class_names))
                _atomic_text(score_path, json.dumps(result, indent=1))

    def stage_report(self) -> None:
        from semi2i.pipeline import _atomic_text

        pairs = {}
        for source, target in self.cfg.pairs:
            methods = {}
            for method in REPORT_METHODS:
                path = self.path("scores", self.pair_key(source, target), f"{method}.json")
                if path.exists():
                    score = json.loads(path.read_text())
                    if "miou" in score:
                        methods[method] = {"iou": score["iou"], "miou": score["miou"], "pixel_accuracy": score["pixel_accuracy"]}
            entry = {"source": source, "target": target, "methods": methods}
            if not methods:
                entry["note"] = "target has no labels: maps only"
            pairs[f"{source}->{target}"] = entry
        report = {"cities": self.cfg.city_names, "sources": self.cfg.sources, "targets": self.cfg.targets,
                  "classes": self.cfg.classes, "profile": self.cfg.profile.name, "model": MULTICITY_CHECKPOINT,
                  "pairs": pairs, "seed": self.cfg.seed, "config": self.cfg.name}
        _atomic_text(self.path("report.json"), json.dumps(report, indent=1))
        markdown = report_markdown(report)
        _atomic_text(self.path("report.md"), markdown)
        print(markdown)


def report_markdown(report: dict) -> str:
    from semi2i.pipeline import _pct

    classes = report["classes"]
    lines = [f"# Multi-city adaptation: {', '.join(report['cities'])} ({report['profile']} profile, seed {report.get('seed', 0)})",
             "", "One shared SemI2I generator (multicity.pt) for every target; IoU in percent on each target's labels.", "",
             "| source | target | method | " + " | ".join(classes) + " | mIoU | pixel acc. |",
             "|---" * (len(classes) + 5) + "|"]
    for entry in report["pairs"].values():
        for name, m in entry["methods"].items():
            cells = [_pct(m["iou"].get(c)) for c in classes]
            lines.append(f"| {entry['source']} | {entry['target']} | {name} | " + " | ".join(cells)
                         + f" | **{_pct(m['miou'])}** | {_pct(m['pixel_accuracy'])} |")
        if not entry["methods"]:
            lines.append(f"| {entry['source']} | {entry['target']} | (no labels) |" + " |" * (len(classes) + 2))
    return "\n".join(lines) + "\n"
