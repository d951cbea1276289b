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
* **data**: each worker trains on its own equal, seeded share of patches (:mod:`~semi2i.training.step_data`),
  read and normalised by Ray Data tasks on the cluster's spare CPUs, or by a thread of the worker when
  the training holds every CPU (:meth:`Scaling.data_plane`). Any step's patches follow from the step
  number alone, so a resumed run replays exactly what an uninterrupted one would have seen, and no
  worker ever waits in a collective that another worker skips (equal shares, same step count);
* **checkpoints** every N steps from rank 0 through ``ray.train.report``; ``FailureConfig`` restarts
  a lost worker group from the latest one, and a run started again with the same run folder resumes
  (Train V2 restores the run named ``<stage>`` under ``<run_dir>/ray``).

This module holds the drivers (:class:`Scaling`, the ``fit_*`` functions, :func:`unet_job`); the worker
loops are in :mod:`~semi2i.training.gan_loop`, :mod:`~semi2i.training.multicity_loop` and
:mod:`~semi2i.training.unet_loop`, built on :mod:`~semi2i.training.ray_worker` (rank, DDP, collectives,
Ray checkpoints), :mod:`~semi2i.training.step_data` (the data) and :mod:`~semi2i.training.progress`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from semi2i.placement import check_driver_node, node_cpus, node_selector
from semi2i.remote_run import ray_storage
from semi2i.checkpoints import UNET_CHECKPOINT
from semi2i.config import ColorMapGANConfig, ConfigError, CycleGANConfig, SemI2IConfig, UNetTrainConfig
from semi2i.data.normalize import BandStats
from semi2i.data.store import open_store
from semi2i.training.gan_loop import GANS, gan_worker_loop
from semi2i.training.multicity_loop import multicity_worker_loop
from semi2i.training.step_data import DataPlane
from semi2i.training.unet_loop import unet_jobs_worker_loop, unet_worker_loop


@dataclass(frozen=True)
class Scaling:
    """How many workers, on what; threads per worker default to an even share of a worker node's cores
    (the cluster's largest node: :func:`semi2i.placement.node_cpus`)."""

    num_workers: int = 1
    use_gpu: bool = False
    threads_per_worker: int | None = None
    max_failures: int = 3
    data: Literal["auto", "ray_data", "worker"] = "auto"

    def threads(self) -> int:
        return self.threads_per_worker or max(1, node_cpus() // self.num_workers)

    def data_plane(self, idle_cores: float, free_cpus: float) -> DataPlane:
        """Who reads the patches (:mod:`semi2i.training.step_data`): ``auto`` = Ray Data when the cluster has
        a core the training's torch threads leave idle (GPU workers, a larger cluster), the workers' own
        threads otherwise: where the threads already use every core (a laptop), reading in other processes
        only adds the transfer (2 cores, quick SemI2I: 0.83-0.97x the steps/s and 4-5 s more per run,
        benchmarks/bench_train.py).
        ``ray_data`` needs a CPU that Ray can schedule read tasks on (``free_cpus``)."""
        if self.data == "worker" or (self.data == "auto" and idle_cores < 1):
            return "worker"
        if free_cpus < 1:
            raise ValueError(f"reading patches with Ray Data needs a CPU beside the {self.num_workers} training workers' "
                             f"and the Ray cluster has {free_cpus:g} to spare: use data='worker' or add CPUs")
        return "ray_data"


#: How often the Ray Train controller polls its workers (Train V2, Ray 2.60: 2 s by default). A run's start
#: and end, and a report made before the controller took the previous one, wait for that poll: seconds per
#: Ray Train run, which add up for short runs and batched jobs (tests/test_multicity.py's tiny three-city
#: run: 91 -> 47 s with this and checkpoint-only reports). The driver's value is handed to the controller;
#: a user's own ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` wins.
CONTROLLER_POLL_S = "0.2"

#: Ray Train V2 (Ray 2.60) starts a preemption watcher actor beside every run's workers, to hear of cloud nodes
#: being reclaimed. A user's own value wins; see :func:`started_ray_here` for when the platform turns it off.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def started_ray_here() -> bool:
    """Whether this process started its Ray itself (``ray.init()`` with no cluster to join: a laptop, one machine).

    Then the preemption watcher has nothing to watch: Ray runs on this machine, whose loss would end this driver
    too. Its process start costs each Ray Train run ~2.7 s on 2 cores (a no-op ``TorchTrainer``, Zen 1 EPYC: 17.3
    -> 14.6 s), so :func:`_fit` turns it off there. A Ray the driver joined (a cluster, ``ray job submit``, an
    autoscaler that may add spot nodes) keeps it. Ray has no public flag for this; its head-node object (Ray 2.60:
    ``ray._private.worker._global_node``) is a head only in the process that started the Ray."""
    import ray._private.worker

    node = getattr(ray._private.worker, "_global_node", None)
    return node is not None and node.is_head()


def set_ray_train_env() -> None:
    """The Ray Train settings a run's driver hands its controller, which reads them from the driver's environment
    when the trainer is made (a user's own values win)."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", CONTROLLER_POLL_S)
    if started_ray_here():
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")


def _fit(loop: Callable[[dict], dict], config: dict, run_dir: Path, stage: str, scaling: Scaling) -> Any:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init()
    set_ray_train_env()
    cpus_needed = scaling.num_workers * (0 if scaling.use_gpu else 1)
    available = ray.cluster_resources().get("CPU", 0)
    if cpus_needed > available:
        raise ValueError(f"{stage}: {scaling.num_workers} workers need {cpus_needed} CPUs but the Ray cluster has {available:g}")
    # of the CPUs nobody holds now (a Tune trial's driver, other runs): those left beside this run's workers, and
    # the cores left idle by their torch threads
    free_now = ray.available_resources().get("CPU", 0)
    spare = free_now - cpus_needed
    plane = scaling.data_plane(idle_cores=free_now - cpus_needed * scaling.threads(), free_cpus=spare)
    # inside placement.on_driver_node (a run folder on object storage, worked on in this node's local copy):
    # the workers stay on this node and read their patches themselves (Ray Data's read tasks could go anywhere)
    selector = node_selector()
    if selector:
        check_driver_node(stage, scaling.num_workers * (0 if scaling.use_gpu else 1), scaling.num_workers if scaling.use_gpu else 0)
        plane = "worker"
    trainer = TorchTrainer(
        loop,
        # absolute: Ray Train workers run in their own working directories
        train_loop_config={**config, "run_dir": str(run_dir.resolve()), "stage": stage, "threads": scaling.threads(),
                           "data_plane": plane, "data_cpus": spare},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=None if scaling.use_gpu else {"CPU": 1},
                                               label_selector=selector),
        run_config=ray.train.RunConfig(
            name=stage,
            storage_path=ray_storage(run_dir),  # <run_dir>/ray, or on the bucket of a run on object storage
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
