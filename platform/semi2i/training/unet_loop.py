"""The Ray Train worker loops of U-net training and fine-tuning (:class:`UNetStep` on a DDP-wrapped
U-net): one job per worker group, or several :func:`semi2i.training.distributed.unet_job` jobs one after
the other in one group; and what a U-net checkpoint carries besides its weights (:func:`unet_metadata`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from semi2i.checkpoints import UNET_CHECKPOINT
from semi2i.config import UNetTrainConfig
from semi2i.data.patches import city_windows
from semi2i.data.store import open_store
from semi2i.models.precision import resolve_precision
from semi2i.training.class_balance import training_class_weights
from semi2i.training.progress import Progress
from semi2i.training.ray_worker import average_buffers, crash_once, report_checkpoint, restored_state, setup_worker, wrap
from semi2i.training.schedule import cosine_learning_rate
from semi2i.training.step_data import StepPlan, StepReaders

log = logging.getLogger(__name__)


def unet_worker_loop(config: dict) -> dict:
    """Ray Train worker: U-net training (or fine-tuning from ``init``) on labelled patches."""
    rank, world, device = setup_worker(config["threads"])
    step, progress, readers = _train_unet(config, rank, world, device, restored_state(UNET_CHECKPOINT), UNET_CHECKPOINT)
    return {"step": step.iteration, "samples_per_s": progress.rate(step.iteration), **readers.summary()}


def unet_jobs_worker_loop(config: dict) -> dict:
    """Ray Train worker: several :func:`unet_job` trainings/fine-tunes one after the other in ONE worker group.

    Each job trains as :func:`unet_worker_loop` would (same data order, DDP, checkpoints); a job whose
    output exists is skipped, so a restarted or re-run stage resumes at the first unfinished job, and
    each job's Ray checkpoint file carries the job's output name, so a restore never hands one job
    another's state. One launch instead of one per job matters for the multi-city run: N sources x N
    targets fine-tunes, and a Ray Train launch costs seconds.
    """
    import ray.train

    from semi2i.checkpoints import load_checkpoint

    rank, world, device = setup_worker(config["threads"])
    run_dir = Path(config["run_dir"])
    restore = ray.train.get_checkpoint()  # what this worker group started from (a report replaces it)
    done_jobs, readers = 0, None
    for job in config["jobs"]:
        job = {**job, **{k: config[k] for k in ("run_dir", "data_plane", "data_cpus") if k in config}}
        name = job["output"]
        if (run_dir / name).exists():
            continue
        restored = None
        if restore is not None:
            with restore.as_directory() as d:
                if (Path(d) / name).exists():
                    restored = load_checkpoint(Path(d) / name)
        _, _, readers = _train_unet(job, rank, world, device, restored, name)
        if world > 1:
            torch.distributed.barrier()  # the next job's skip test must see this output on every rank
        done_jobs += 1
    return {"jobs": done_jobs, **(readers.summary() if readers else {})}


def _train_unet(config: dict, rank: int, world: int, device: torch.device, restored: dict | None,
                checkpoint_name: str) -> tuple[Any, Progress, StepReaders]:
    """One :func:`unet_job` in this worker, from ``restored`` if given; Ray checkpoints hold the state as
    ``checkpoint_name``, and rank 0 saves the final model as ``config["output"]``."""
    from semi2i.models.unet import UNet
    from semi2i.checkpoints import load_checkpoint, save_checkpoint
    from semi2i.training.unet_step import UNetStep

    cfg = UNetTrainConfig(**config["cfg"])
    run_dir = Path(config["run_dir"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = UNet(config["in_bands"], config["num_classes"], cfg.base_width, cfg.depth)
    if config.get("init"):
        model.load_state_dict(load_checkpoint(config["init"])["model"])
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    windows = [w for store in config["stores"] for w in city_windows(open_store(store), cfg.patch_size, config["overlap"])]
    weights = training_class_weights(windows, config["num_classes"], cfg.class_balance)
    step = UNetStep(wrap(model, world), lr=cfg.lr, ignore_index=config["ignore_index"], precision=cfg.precision,
                    tf32=cfg.tf32, class_weights=weights)
    if restored is not None:
        step.load_state_dict(restored)
    per_worker = max(1, cfg.batch_size // world)
    total = config["steps"]
    progress = Progress(config["stage"], run_dir, rank, total, step.iteration, "samples", per_worker * world)
    if rank == 0:
        log.info("%s: %s on %s (precision: %s)%s", config["stage"], resolve_precision(device, cfg.precision), device,
                 cfg.precision, "" if weights is None else f", class weights {[round(w, 2) for w in weights]}")

    def state() -> dict:
        saved = step.state_dict()
        saved.update(unet_metadata(config))
        return saved

    cosine = (cfg.finetune_lr_schedule if config.get("init") else cfg.train_lr_schedule) == "cosine"
    plan = StepPlan(((tuple(windows), config["seed"]),), rank, world, per_worker, "zscore", stats=config["stats"], labels=True)
    readers = StepReaders(config)
    for batch in readers.steps(plan, step.iteration, total):
        lr = cosine_learning_rate(step.iteration, cfg.lr, total) if cosine else cfg.lr
        step.set_learning_rate(lr)
        values = step.step(batch["patch"], batch["patch_label"])
        done = step.iteration
        checkpoint = done % config["checkpoint_every"] == 0 or done == total
        if done % config["log_every"] == 0 or checkpoint:
            metrics = {**{k: float(v) for k, v in values.items()}, "lr": lr, "step": done, "samples_per_s": progress.rate(done)}
            progress.log(done, metrics)
            if checkpoint:
                average_buffers(model, world)
                report_checkpoint(metrics, rank, state, checkpoint_name)
        crash_once(config, done)
    progress.close()
    if rank == 0:
        save_checkpoint(run_dir / config["output"], state())
    return step, progress, readers


def unet_metadata(config: dict) -> dict:
    """What a U-net checkpoint must carry to be used on new imagery: its architecture and normaliser."""
    return {
        "in_bands": config["in_bands"],
        "num_classes": config["num_classes"],
        "class_names": config["class_names"],
        "ignore_index": config["ignore_index"],
        "unet": config["cfg"],
        "stats": config["stats"],
        "grid": config.get("grid"),  # CRS + pixel size of the training imagery (jobs/map_region.py checks it)
    }
