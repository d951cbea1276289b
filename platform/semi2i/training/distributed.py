"""Data-parallel GAN (SemI2I, ColorMapGAN, CycleGAN, multi-city SemI2I) and U-net training on Ray Train
(``TorchTrainer``, DDP, gloo/nccl).

The same code runs 1 CPU process, N workers on one machine, or a GPU cluster:

* every worker runs the single-process step classes (:class:`SemI2IStep`, :class:`ColorMapGANStep`,
  :class:`CycleGANStep`, :class:`MultiCityStep`, :class:`UNetStep`) unchanged, on DDP-wrapped networks
  (``prepare_model``); the three two-city GANs share one loop through the small step protocol of
  :mod:`semi2i.training.gan`, and the multi-city loop shares its logging and checkpointing;
* **style statistics**: each step, every worker's batch μ, σ are averaged across workers with
  ``all_reduce`` before Algorithm 1, so all replicas hold the same global statistics (DDP does not
  touch them: :class:`GlobalStyleStats` is not inside a DDP module);
* **data**: each worker reads its own equal, seeded share of patches straight from the city stores
  (:func:`semi2i.data.patches.step_windows`, the same reader as the Ray Data stream) with a prefetch
  thread. Any step's patches follow from the step number alone, so a resumed run replays exactly
  what an uninterrupted one would have seen, and no worker ever waits in a collective that another
  worker skips (equal shares, same step count);
* **checkpoints** every N steps from rank 0 through ``ray.train.report``; ``FailureConfig`` restarts
  a lost worker group from the latest one, and a run started again with the same run folder resumes
  (Train V2 restores the run named ``<stage>`` under ``<run_dir>/ray``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from semi2i.config import ColorMapGANConfig, ConfigError, CycleGANConfig, SemI2IConfig, UNetTrainConfig
from semi2i.data.normalize import BandStats
from semi2i.data.patches import Window, city_windows, step_windows
from semi2i.data.store import open_store
from semi2i.data.stream import Normalize, read_patches, window_columns
from semi2i.training.schedule import cosine_learning_rate

log = logging.getLogger(__name__)

SEMI2I_CHECKPOINT = "semi2i.pt"
COLORMAPGAN_CHECKPOINT = "colormapgan.pt"
CYCLEGAN_CHECKPOINT = "cyclegan.pt"
UNET_CHECKPOINT = "unet.pt"
MULTICITY_CHECKPOINT = "multicity.pt"


# ---------------------------------------------------------------------------------------------------
# per-worker data: equal, deterministic shares read ahead in a thread


def patch_batches(
    windows: list[Window],
    *,
    seed: int,
    start_step: int,
    end_step: int,
    rank: int,
    world: int,
    per_worker: int,
    normalize: Normalize,
    stats: BandStats | None = None,
    prefetch: int = 4,
) -> Iterator[dict[str, torch.Tensor]]:
    """This worker's batches for steps [start_step, end_step), read by a background thread."""
    stats_attrs = stats.to_attrs() if stats is not None else None
    out: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        try:
            for step in range(start_step, end_step):
                picked = step_windows(windows, seed, step, rank, world, per_worker)
                batch = read_patches(window_columns(picked), normalize, stats_attrs)
                item = {"image": torch.from_numpy(batch["image"]), "label": torch.from_numpy(batch["label"])}
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(None)
        except BaseException as exc:  # surface reader errors in the training thread
            out.put(exc)

    thread = threading.Thread(target=produce, name="patch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


# ---------------------------------------------------------------------------------------------------
# helpers shared by both loops


def _setup_worker(threads: int) -> tuple[int, int, torch.device]:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(max(1, threads))
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def _wrap(module: torch.nn.Module, world: int) -> torch.nn.Module:
    """DDP-wrap for >1 worker. Buffers are not broadcast: every replica computes identical ones
    (instance norm has none; batch-norm running stats differ per shard and are averaged at save)."""
    import ray.train.torch

    if world == 1:
        return module
    return ray.train.torch.prepare_model(module, move_to_device=True, parallel_strategy_kwargs={"broadcast_buffers": False})


def _allreduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    reduced = tensor.clone()
    torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM)
    return reduced / torch.distributed.get_world_size()


def _average_buffers(module: torch.nn.Module, world: int) -> None:
    """Average floating buffers (batch-norm running statistics) so the saved model sees every shard."""
    if world == 1:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            buf.copy_(_allreduce_mean(buf))


def _restored_state(name: str) -> dict[str, Any] | None:
    import ray.train

    from semi2i.checkpoints import load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return load_checkpoint(Path(d) / name)


def _report(metrics: dict[str, float], rank: int, state_fn: Callable[[], dict] | None, name: str) -> None:
    """Report metrics from every rank; with ``state_fn``, rank 0 also hands Ray a checkpoint."""
    import ray.train

    from semi2i.checkpoints import save_checkpoint

    if state_fn is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            save_checkpoint(Path(d) / name, state_fn())
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


class _Progress:
    """Rank 0's log lines with rates and ETA, plus TensorBoard scalars."""

    def __init__(self, name: str, run_dir: Path, rank: int, total: int, start: int, units: str, per_step: int):
        self.name, self.rank, self.total, self.start, self.units, self.per_step = name, rank, total, start, units, per_step
        self.t0 = time.perf_counter()
        self.writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard" / name))

    def rate(self, step: int) -> float:
        return (step - self.start) * self.per_step / max(time.perf_counter() - self.t0, 1e-9)

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{self.name}/{key}", value, step)
        rate = self.rate(step)
        eta = (self.total - step) * self.per_step / max(rate, 1e-9)
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in {"step"})
        log.info("%s step %d/%d %s | %.2f %s/s, ETA %s", self.name, step, self.total, shown, rate, self.units, _eta(eta))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _crash_once(config: dict, step: int) -> None:
    """Failure injection for tests: raise once at a given step (a marker file makes it once)."""
    crash = config.get("crash_at_step")
    if crash is None or step != crash:
        return
    marker = Path(config["run_dir"]) / f".crashed-{config['stage']}-{step}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step}")


# ---------------------------------------------------------------------------------------------------
# the image-translation GANs: SemI2I and the ColorMapGAN / CycleGAN baselines, one loop


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
    return SemI2IStep(cfg, _wrap(models.generator, world), _wrap(models.disc_a, world), _wrap(models.disc_b, world),
                      models.style, reduce_style_stats=_allreduce_mean if world > 1 else None)


def _semi2i_preview(step: Any, a: torch.Tensor, b: torch.Tensor, path: Path) -> Any:
    from semi2i.training.semi2i_trainer import save_preview

    with torch.no_grad():
        return save_preview(step, a, b, path)


def _semi2i_summary(step: Any, rank: int, world: int) -> dict:
    """Every rank's global statistics, so callers can verify they are identical."""
    stats = torch.cat([b.detach().flatten() for b in step.style.buffers()])
    return {"style_stats_per_rank": [g.cpu().numpy() for g in _allgather(stats, world)]}


def _build_colormapgan(cfg: ColorMapGANConfig, device: torch.device, rank: int, world: int) -> Any:
    from semi2i.training.colormapgan_step import ColorMapGANStep, build_models

    models = build_models(cfg).to(device)
    return ColorMapGANStep(cfg, _wrap(models.generator, world), _wrap(models.disc_b, world))


def _build_cyclegan(cfg: CycleGANConfig, device: torch.device, rank: int, world: int) -> Any:
    from semi2i.training.cyclegan_step import CycleGANStep, build_models

    m = build_models(cfg).to(device)
    return CycleGANStep(cfg, _wrap(m.gen_ab, world), _wrap(m.gen_ba, world), _wrap(m.disc_a, world), _wrap(m.disc_b, world),
                        rank=rank, world=world, gather=(lambda t: _allgather(t.to(device), world)) if world > 1 else None)


def _gan_preview(step: Any, a: torch.Tensor, b: torch.Tensor, path: Path) -> Any:
    from semi2i.training.gan import save_gan_preview

    with torch.no_grad():
        return save_gan_preview(step, a, b, path)


GANS: dict[str, GANSpec] = {
    "semi2i": GANSpec("semi2i", SEMI2I_CHECKPOINT, SemI2IConfig, _build_semi2i, _semi2i_preview, _semi2i_summary),
    "colormapgan": GANSpec("colormapgan", COLORMAPGAN_CHECKPOINT, ColorMapGANConfig, _build_colormapgan, _gan_preview),
    "cyclegan": GANSpec("cyclegan", CYCLEGAN_CHECKPOINT, CycleGANConfig, _build_cyclegan, _gan_preview),
}


def _allgather(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    if world == 1:
        return [tensor]
    gathered = [torch.zeros_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(gathered, tensor)
    return gathered


def gan_worker_loop(config: dict) -> dict:
    """Ray Train worker: one patch per domain per worker per step (paper §3) through any GAN step
    (``config["model"]`` in :data:`GANS`), with the same data, schedule, checkpoints and previews."""
    from semi2i.training.semi2i_trainer import steps_per_epoch

    spec = GANS[config["model"]]
    name = config.get("name") or spec.name  # a run's name (K SemI2I seeds: semi2i_seed<k>)
    checkpoint = spec.checkpoint if name == spec.name else f"{name}.pt"
    rank, world, device = _setup_worker(config["threads"])
    cfg = spec.config(**config["cfg"])
    run_dir = Path(config["run_dir"])
    step = spec.build(cfg, device, rank, world)
    restored = _restored_state(checkpoint)
    if restored is not None:
        step.load_state_dict(restored)

    windows_a = city_windows(open_store(config["source"]), cfg.patch_size, config["overlap"])
    windows_b = city_windows(open_store(config["target"]), cfg.patch_size, config["overlap"])
    spe = max(1, steps_per_epoch(cfg, len(windows_a), len(windows_b)) // world)
    total = config.get("max_steps") or cfg.epochs * spe
    progress = _Progress(name, run_dir, rank, total, step.step, "steps", 1)
    batches = {
        domain: patch_batches(windows, seed=cfg.seed + offset, start_step=step.step, end_step=total, rank=rank, world=world,
                              per_worker=1, normalize="unit")
        for domain, windows, offset in (("a", windows_a, 0), ("b", windows_b, 1_000_003))
    }
    losses: dict[str, float] = {}
    for batch_a, batch_b in zip(batches["a"], batches["b"]):
        step.set_epoch(step.step // spe)
        losses = step.train_step(batch_a["image"], batch_b["image"])
        done = step.step
        _log_gan_step(step, losses, cfg, total, progress, rank, checkpoint)
        if rank == 0 and done % cfg.preview_every == 0:
            spec.preview(step, batch_a["image"], batch_b["image"], run_dir / "previews" / f"{name}_step{done:06d}.png")
        _crash_once(config, done)

    extra = spec.summary(step, rank, world) if spec.summary else {}
    return _finish_gan(step, losses, progress, rank, run_dir / checkpoint, extra)


def _log_gan_step(step: Any, losses: dict[str, float], cfg: Any, total: int, progress: _Progress, rank: int,
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
        state = step.state_dict() if checkpoint else None  # on every rank: it may gather (CycleGAN's pools)
        _report(metrics, rank, (lambda: state) if checkpoint else None, checkpoint_name)


def _finish_gan(step: Any, losses: dict[str, float], progress: _Progress, rank: int, path: Path, extra: dict) -> dict:
    """The final training state (built on every rank, saved by rank 0) and this rank's summary."""
    from semi2i.checkpoints import save_checkpoint

    progress.close()
    state = step.state_dict()
    if rank == 0:
        save_checkpoint(path, state)
    return {"step": step.step, "epoch": step.epoch, "losses": losses, "steps_per_s": progress.rate(step.step), **extra}


def multicity_worker_loop(config: dict) -> dict:
    """Ray Train worker for the multi-city model: each step trains the pair of cities
    :func:`~semi2i.training.multicity_step.pair_for_step` draws, one patch of each per worker.

    Not :func:`gan_worker_loop`: the two cities change every step, so batches are read per step from the
    pair's windows (no two fixed prefetched streams), and the step takes the pair's indices.
    """
    from semi2i.training.multicity_step import MultiCityStep, pair_for_step
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

    def batch(city: int, at: int) -> torch.Tensor:
        picked = step_windows(windows[city], cfg.seed + 1_000_003 * city, at, rank, world, 1)
        return torch.from_numpy(read_patches(window_columns(picked), "unit")["image"])

    losses: dict[str, float] = {}
    while step.step < total:
        at = step.step
        i, j = pair_for_step(cfg.seed, at, len(cities))
        step.set_epoch(at // spe)
        losses = step.train_step(batch(i, at), batch(j, at), i, j)
        _log_gan_step(step, losses, cfg, total, progress, rank, MULTICITY_CHECKPOINT, note=f"pair {cities[i]} -> {cities[j]}")
        _crash_once(config, step.step)
    return _finish_gan(step, losses, progress, rank, run_dir / MULTICITY_CHECKPOINT, {})


# ---------------------------------------------------------------------------------------------------
# U-net


def unet_worker_loop(config: dict) -> dict:
    """Ray Train worker: U-net training (or fine-tuning from ``init``) on labelled patches."""
    rank, world, device = _setup_worker(config["threads"])
    step, progress = _train_unet(config, rank, world, device, _restored_state(UNET_CHECKPOINT), UNET_CHECKPOINT)
    return {"step": step.iteration, "samples_per_s": progress.rate(step.iteration)}


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

    rank, world, device = _setup_worker(config["threads"])
    run_dir = Path(config["run_dir"])
    restore = ray.train.get_checkpoint()  # what this worker group started from (a report replaces it)
    done_jobs = 0
    for job in config["jobs"]:
        job = {**job, "run_dir": config["run_dir"]}
        name = job["output"]
        if (run_dir / name).exists():
            continue
        restored = None
        if restore is not None:
            with restore.as_directory() as d:
                if (Path(d) / name).exists():
                    restored = load_checkpoint(Path(d) / name)
        _train_unet(job, rank, world, device, restored, name)
        if world > 1:
            torch.distributed.barrier()  # the next job's skip test must see this output on every rank
        done_jobs += 1
    return {"jobs": done_jobs}


def _train_unet(config: dict, rank: int, world: int, device: torch.device, restored: dict | None,
                checkpoint_name: str) -> tuple[Any, _Progress]:
    """One :func:`unet_job` in this worker, from ``restored`` if given; Ray checkpoints hold the state as
    ``checkpoint_name``, and rank 0 saves the final model as ``config["output"]``."""
    from semi2i.models.unet import UNet
    from semi2i.checkpoints import load_checkpoint, save_checkpoint
    from semi2i.training.unet_step import UNetStep

    cfg = UNetTrainConfig(**config["cfg"])
    run_dir = Path(config["run_dir"])
    stats = BandStats.from_attrs(config["stats"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = UNet(config["in_bands"], config["num_classes"], cfg.base_width, cfg.depth)
    if config.get("init"):
        model.load_state_dict(load_checkpoint(config["init"])["model"])
    model.to(device)
    step = UNetStep(_wrap(model, world), lr=cfg.lr, ignore_index=config["ignore_index"])
    if restored is not None:
        step.load_state_dict(restored)

    windows = [w for store in config["stores"] for w in city_windows(open_store(store), cfg.patch_size, config["overlap"])]
    per_worker = max(1, cfg.batch_size // world)
    total = config["steps"]
    progress = _Progress(config["stage"], run_dir, rank, total, step.iteration, "samples", per_worker * world)

    def state() -> dict:
        saved = step.state_dict()
        saved.update(unet_metadata(config))
        return saved

    cosine = bool(config.get("init")) and cfg.finetune_lr_schedule == "cosine"
    for batch in patch_batches(windows, seed=config["seed"], start_step=step.iteration, end_step=total, rank=rank, world=world,
                               per_worker=per_worker, normalize="zscore", stats=stats):
        lr = cosine_learning_rate(step.iteration, cfg.lr, total) if cosine else cfg.lr
        step.set_learning_rate(lr)
        values = step.step(batch["image"], batch["label"])
        done = step.iteration
        checkpoint = done % config["checkpoint_every"] == 0 or done == total
        if done % config["log_every"] == 0 or checkpoint:
            metrics = {**{k: float(v) for k, v in values.items()}, "lr": lr, "step": done, "samples_per_s": progress.rate(done)}
            progress.log(done, metrics)
            if checkpoint:
                _average_buffers(model, world)
            _report(metrics, rank, state if checkpoint else None, checkpoint_name)
        _crash_once(config, done)
    progress.close()
    if rank == 0:
        save_checkpoint(run_dir / config["output"], state())
    return step, progress


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


# ---------------------------------------------------------------------------------------------------
# drivers


@dataclass(frozen=True)
class Scaling:
    """How many workers, on what; threads per worker default to an even share of this node's cores."""

    num_workers: int = 1
    use_gpu: bool = False
    threads_per_worker: int | None = None
    max_failures: int = 3

    def threads(self) -> int:
        return self.threads_per_worker or max(1, (os.cpu_count() or 1) // self.num_workers)


def _fit(loop: Callable[[dict], dict], config: dict, run_dir: Path, stage: str, scaling: Scaling) -> Any:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init()
    cpus_needed = scaling.num_workers * (0 if scaling.use_gpu else 1)
    available = ray.cluster_resources().get("CPU", 0)
    if cpus_needed > available:
        raise ValueError(f"{stage}: {scaling.num_workers} workers need {cpus_needed} CPUs but the Ray cluster has {available:g}")
    trainer = TorchTrainer(
        loop,
        # absolute: Ray Train workers run in their own working directories
        train_loop_config={**config, "run_dir": str(run_dir.resolve()), "stage": stage, "threads": scaling.threads()},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=None if scaling.use_gpu else {"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=stage,
            storage_path=str((run_dir / "ray").resolve()),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def fit_gan(
    model: str,
    cfg: Any,
    source_store: str | Path,
    target_store: str | Path,
    run_dir: str | Path,
    *,
    overlap: int = 32,
    scaling: Scaling = Scaling(),
    max_steps: int | None = None,
    crash_at_step: int | None = None,
    name: str | None = None,
) -> dict:
    """Train the GAN ``model`` (a key of :data:`GANS`; source = domain A, target = domain B) with Ray
    Train; returns rank 0's summary. The final training state goes to ``<run_dir>/<its checkpoint>``,
    or ``<run_dir>/<name>.pt`` for a ``name``d run (its Ray Train run, logs and previews take the name)."""
    spec = GANS[model]
    if not isinstance(cfg, spec.config):
        raise TypeError(f"{model} needs a {spec.config.__name__}, got {type(cfg).__name__}")
    run_dir = Path(run_dir)
    source, target = open_store(str(source_store)), open_store(str(target_store))
    cfg = dataclasses.replace(cfg, in_bands_a=source.num_bands, in_bands_b=target.num_bands)
    if model == "colormapgan":
        from semi2i.models.colormapgan import require_equal_bands

        require_equal_bands(cfg.in_bands_a, cfg.in_bands_b)  # before any worker starts
    config = {
        "model": model,
        "cfg": dataclasses.asdict(cfg),
        "source": str(Path(source_store).resolve()),
        "target": str(Path(target_store).resolve()),
        "overlap": overlap,
        "max_steps": max_steps,
        "crash_at_step": crash_at_step,
        "name": name or spec.name,
    }
    result = _fit(gan_worker_loop, config, run_dir, name or spec.name, scaling)
    return result.return_value


def fit_semi2i(cfg: SemI2IConfig, source_store: str | Path, target_store: str | Path, run_dir: str | Path, **kwargs: Any) -> dict:
    """Train SemI2I (source = domain A, target = domain B) with Ray Train; returns rank 0's summary
    (with every rank's global style statistics). The final training state is ``<run_dir>/semi2i.pt``.
    Keywords as :func:`fit_gan` (``overlap``, ``scaling``, ``max_steps``, ``crash_at_step``)."""
    return fit_gan("semi2i", cfg, source_store, target_store, run_dir, **kwargs)


def fit_colormapgan(cfg: ColorMapGANConfig, source_store: str | Path, target_store: str | Path, run_dir: str | Path,
                    **kwargs: Any) -> dict:
    """Train the ColorMapGAN baseline (needs equal band counts); writes ``<run_dir>/colormapgan.pt``."""
    return fit_gan("colormapgan", cfg, source_store, target_store, run_dir, **kwargs)


def fit_cyclegan(cfg: CycleGANConfig, source_store: str | Path, target_store: str | Path, run_dir: str | Path,
                 **kwargs: Any) -> dict:
    """Train the CycleGAN baseline; writes ``<run_dir>/cyclegan.pt``."""
    return fit_gan("cyclegan", cfg, source_store, target_store, run_dir, **kwargs)


def fit_unet(
    cfg: UNetTrainConfig,
    stores: list[str | Path],
    run_dir: str | Path,
    *,
    stage: str = "unet",
    output: str = UNET_CHECKPOINT,
    scaling: Scaling = Scaling(),
    **options: Any,
) -> dict:
    """Train a U-net on labelled city stores (or fine-tune ``init``) with Ray Train; writes
    ``<run_dir>/<output>``. ``options``: those of :func:`unet_job` (``steps``, ``init``, ``stats``,
    ``overlap``, ``seed``, ``checkpoint_every``, ``log_every``, ``crash_at_step``)."""
    job = unet_job(cfg, stores, stage=stage, output=output, **options)
    result = _fit(unet_worker_loop, job, Path(run_dir), stage, scaling)
    return result.return_value


def unet_job(
    cfg: UNetTrainConfig,
    stores: list[str | Path],
    *,
    stage: str,
    output: str,
    steps: int | None = None,
    init: str | Path | None = None,
    stats: BandStats | None = None,
    overlap: int = 32,
    seed: int = 0,
    checkpoint_every: int = 100,
    log_every: int = 10,
    crash_at_step: int | None = None,
) -> dict:
    """One U-net training as the plain config its worker loop takes: :func:`fit_unet` runs one,
    :func:`fit_unets` several in one Ray Train run.

    ``stats`` is the model's input normaliser (default: the first store's statistics); a fine-tune
    keeps the normaliser of the checkpoint it starts from.
    """
    from semi2i.checkpoints import load_checkpoint

    opened = [open_store(str(s)) for s in stores]
    first = opened[0]
    for s in opened:
        if not s.has_labels:
            raise ValueError(f"{s.path}: U-net training needs labels, this store has none")
        if s.num_bands != first.num_bands or s.class_names != first.class_names:
            raise ValueError(f"{s.path}: bands/classes differ from {first.path}")
    if init is not None:
        stats = BandStats.from_attrs(load_checkpoint(init)["stats"])
    stats = stats or first.band_stats
    grid = next(({"crs_wkt": r.crs.to_wkt(), "resolution": [abs(r.transform.a), abs(r.transform.e)]}
                 for s in opened for r in s.rasters if r.crs is not None), None)
    return {
        "cfg": dataclasses.asdict(cfg),
        "stores": [str(Path(s).resolve()) for s in stores],
        "in_bands": first.num_bands,
        "num_classes": first.num_classes,
        "class_names": first.class_names,
        "ignore_index": first.ignore_index,
        "stats": stats.to_attrs(),
        "grid": grid,
        "init": str(Path(init).resolve()) if init else None,
        "steps": steps if steps is not None else (cfg.finetune_steps if init else cfg.train_steps),
        "output": output,
        "overlap": overlap,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        "log_every": log_every,
        "stage": stage,
        "crash_at_step": crash_at_step,
    }


def fit_unets(jobs: list[dict], run_dir: str | Path, stage: str, scaling: Scaling = Scaling()) -> dict | None:
    """Run the :func:`unet_job` jobs whose outputs are missing, in one Ray Train run named ``stage``."""
    run_dir = Path(run_dir)
    todo = [j for j in jobs if not (run_dir / j["output"]).exists()]
    if not todo:
        return None
    return _fit(unet_jobs_worker_loop, {"jobs": todo}, run_dir, stage, scaling).return_value


def fit_multicity(cfg: SemI2IConfig, stores: dict[str, str | Path], run_dir: str | Path, *, overlap: int = 32,
                  scaling: Scaling = Scaling(), max_steps: int | None = None, crash_at_step: int | None = None) -> dict:
    """Train the multi-city model on ``stores`` ({city: store}, >= 2, equal band counts) with Ray Train;
    writes ``<run_dir>/multicity.pt`` and returns rank 0's summary."""
    if len(stores) < 2:
        raise ValueError(f"multi-city training needs at least 2 cities, got {list(stores)}")
    bands = {name: open_store(str(p)).num_bands for name, p in stores.items()}
    if len(set(bands.values())) != 1:
        raise ConfigError(f"the multi-city model shares one encoder/decoder and needs equal band counts, got {bands}")
    cfg = dataclasses.replace(cfg, in_bands_a=next(iter(bands.values())), in_bands_b=next(iter(bands.values())))
    config = {"cfg": dataclasses.asdict(cfg), "cities": list(stores), "stores": [str(Path(p).resolve()) for p in stores.values()],
              "overlap": overlap, "max_steps": max_steps, "crash_at_step": crash_at_step}
    return _fit(multicity_worker_loop, config, Path(run_dir), "multicity", scaling).return_value
