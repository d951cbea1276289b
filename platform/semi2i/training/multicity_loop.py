"""The Ray Train worker loop of the multi-city SemI2I model (:class:`MultiCityStep` on DDP-wrapped
networks, one pair of cities per step), with the GAN loop's logging and checkpointing."""

from __future__ import annotations

from pathlib import Path

from semi2i.checkpoints import MULTICITY_CHECKPOINT
from semi2i.config import SemI2IConfig
from semi2i.data.patches import city_windows
from semi2i.data.store import open_store
from semi2i.training.gan_loop import finish_gan, log_gan_step
from semi2i.training.progress import Progress
from semi2i.training.step_data import StepPlan, StepReaders
from semi2i.training.ray_worker import allreduce_mean, crash_once, restored_state, setup_worker, wrap


def multicity_worker_loop(config: dict) -> dict:
    """Ray Train worker for the multi-city model: each step trains the pair of cities
    :func:`~semi2i.training.multicity_step.pair_for_step` draws, one patch of each per worker.

    Not :func:`gan_worker_loop`: the two cities change every step (the plan's ``pairs_seed`` draws them), and
    the step takes the pair's indices.
    """
    from semi2i.training.multicity_step import MultiCityStep
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
    step.steps_per_epoch = spe  # Eq. 3 per step with lr_schedule: step
    total = config.get("max_steps") or cfg.epochs * spe
    progress = Progress("multicity", run_dir, rank, total, step.step, "steps", 1)

    parts = tuple((tuple(w), cfg.seed + 1_000_003 * city) for city, w in enumerate(windows))
    plan = StepPlan(parts, rank, world, 1, "unit", pairs_seed=cfg.seed)
    readers = StepReaders(config)
    losses: dict[str, float] = {}
    for batch in readers.steps(plan, step.step, total):
        i, j = batch["a_part"], batch["b_part"]
        step.set_epoch(step.step // spe)
        losses = step.train_step(batch["a"], batch["b"], i, j)
        log_gan_step(step, losses, cfg, total, progress, rank, MULTICITY_CHECKPOINT, note=f"pair {cities[i]} -> {cities[j]}")
        crash_once(config, step.step)
    return finish_gan(step, losses, progress, rank, run_dir / MULTICITY_CHECKPOINT, readers.summary())
