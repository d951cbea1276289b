"""The Ray Train worker loop of the multi-city SemI2I model (:class:`MultiCityStep` on DDP-wrapped
networks, one pair of cities per step), with the GAN loop's logging and checkpointing."""

from __future__ import annotations

from pathlib import Path

import torch

from semi2i.checkpoints import MULTICITY_CHECKPOINT
from semi2i.config import SemI2IConfig
from semi2i.data.patches import city_windows, step_windows
from semi2i.data.store import open_store
from semi2i.data.stream import read_patches, window_columns
from semi2i.training.gan_loop import finish_gan, log_gan_step
from semi2i.training.progress import Progress
from semi2i.training.ray_worker import allreduce_mean, crash_once, restored_state, setup_worker, wrap


def multicity_worker_loop(config: dict) -> dict:
    """Ray Train worker for the multi-city model: each step trains the pair of cities
    :func:`~semi2i.training.multicity_step.pair_for_step` draws, one patch of each per worker.

    Not :func:`gan_worker_loop`: the two cities change every step, so batches are read per step from the
    pair's windows (no two fixed prefetched streams), and the step takes the pair's indices.
    """
    from semi2i.training.multicity_step import MultiCityStep, pair_for_step
    from semi2i.training.semi2i_trainer import steps_per_epoch

    rank, world, device = setup_worker(config["threads"])
    cfg = SemI2IConfig(**config["cfg"])
    run_dir = Path(config["run_dir"])
    cities = list(config["cities"])
    step = MultiCityStep(cfg, cities, device=device, wrap=lambda m: wrap(m, world),
                         reduce_style_stats=allreduce_mean if world > 1 else None)
    restored = restored_state(MULTICITY_CHECKPOINT)
    if restored is not None:
        step.load_state_dict(restored)
    windows = [city_windows(open_store(s), cfg.patch_size, config["overlap"]) for s in config["stores"]]
    fewest = min(len(w) for w in windows)
    spe = max(1, steps_per_epoch(cfg, fewest, fewest) // world)
    total = config.get("max_steps") or cfg.epochs * spe
    progress = Progress("multicity", run_dir, rank, total, step.step, "steps", 1)

    def batch(city: int, at: int) -> torch.Tensor:
        picked = step_windows(windows[city], cfg.seed + 1_000_003 * city, at, rank, world, 1)
        return torch.from_numpy(read_patches(window_columns(picked), "unit")["image"])

    losses: dict[str, float] = {}
    while step.step < total:
        at = step.step
        i, j = pair_for_step(cfg.seed, at, len(cities))
        step.set_epoch(at // spe)
        losses = step.train_step(batch(i, at), batch(j, at), i, j)
        log_gan_step(step, losses, cfg, total, progress, rank, MULTICITY_CHECKPOINT, note=f"pair {cities[i]} -> {cities[j]}")
        crash_once(config, step.step)
    return finish_gan(step, losses, progress, rank, run_dir / MULTICITY_CHECKPOINT, {})
