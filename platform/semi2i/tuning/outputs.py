"""Ray Tune sweeps of SemI2I's loss weights λ1-λ4 and decay epoch, with ASHA early stopping (``jobs/tune.py``).

One sweep lives in one run folder::

    shared/                      ingest + source-only U-net, computed once for all trials (AdaptRun stages)
                                 and the source-only baseline's score on the target (when it has labels)
    trials/<trial id>/           each trial's own files: semi2i.pt, ray/ (its Ray Train runs), tensorboard/,
                                 rung<k>/metrics.json (+ the last rung's stylized source, U-net and maps)
    tune/sweep/                  Ray Tune's experiment state: Tuner.restore resumes an interrupted sweep
    results.csv, results.md      one row per trial, sorted by the objective
    rungs.csv                    every rung of every trial (mIoU beside the proxy: how well it tracks)
    best.yaml                    the winner as a ready-to-use adapt config (overrides.semi2i)

A trial is a plain Tune function (the *driver*, ``driver_cpus`` CPUs) that, rung by rung, launches
Ray Train ``TorchTrainer`` runs through :func:`fit_semi2i` / :func:`fit_unet` (workers x 1 CPU or 1 GPU,
in their own placement group) and reports the rung's objective with ``ray.tune.report``:

1. continue SemI2I training for ``epochs_per_rung`` epochs (Ray Train resumes the trial's own run);
2. stylize the source (at most ``stylize_rasters`` rasters, evenly spread) with the trial's generator;
3. fine-tune the shared source U-net on it for ``finetune_steps``;
4. segment the target (the region-mapping code path), score it when it has labels, and compute the
   unsupervised proxy (:func:`style_distance` + :func:`structure_loss`);
5. ``tune.report({"miou", "proxy", ...}, checkpoint=<rung number>)``: ASHA compares trials at each rung.

The objective is computed by the driver after the Train run, so the driver reports to Tune itself; Ray
Train's per-step reports (losses) stay in the trial's TensorBoard logs, not in Tune (Train V2's
``ray.tune.integration.ray_train.TuneReportCallback`` would forward them as Tune iterations and
confuse ASHA's rung counting).

Resources: Train V2 workers are not part of the Tune trial's reservation, so a trial needs
``driver_cpus + workers`` CPUs (``driver_cpus`` and ``workers`` GPUs with ``gpu``) at the same time, and at
most ``cluster // per-trial`` trials may run at once; more would deadlock (every driver holding a CPU its
trainer's workers wait for). :func:`plan_concurrency` enforces this before anything starts.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from semi2i.config import ConfigError, SemI2IConfig
from semi2i.data.normalize import QUANTILE_LEVELS, BandStats
from semi2i.pipeline import AdaptConfig, AdaptRun, load_adapt_config, read_config_file
from semi2i.training.distributed import Scaling

log = logging.getLogger(__name__)

LAMBDAS = ("lambda_cross", "lambda_self", "lambda_grad", "lambda_adv", "lambda_tone")  # λ1..λ4, our λ5
SEARCH_KEYS = (*LAMBDAS, "decay_epoch")
#: log-uniform ranges around the paper's values (10, 10, 10, 1); decay_epoch defaults to [0, epochs];
#: lambda_tone is searched only when the sweep's space names it (else the profile's value is kept)
DEFAULT_SPACE: dict[str, Any] = {"lambda_cross": [1.0, 100.0], "lambda_self": [1.0, 100.0], "lambda_grad": [1.0, 100.0],
                                 "lambda_adv": [0.1, 10.0], "decay_epoch": None}
_LABELS = {"lambda_cross": "λ1 cross", "lambda_self": "λ2 self", "lambda_grad": "λ3 grad", "lambda_adv": "λ4 adv",
           "lambda_tone": "λ5 tone", "decay_epoch": "decay epoch"}
#: the columns of results.md and results.csv (csv key -> results.md header), in order: the markdown
#: header and every row are both built from this one mapping, so they cannot drift apart
#: (a new search key without a label fails here, at import)
RESULT_COLUMNS: dict[str, str] = {"rank": "rank", "trial": "trial", "status": "status", "rungs": "rungs",
                                  **{k: _LABELS[k] for k in SEARCH_KEYS}, "miou": "mIoU", "proxy": "proxy",
                                  "style_distance": "style", "structure_loss": "structure"}
EXPERIMENT = "sweep"
METRICS = ("miou", "proxy")


class ResourceError(RuntimeError):
    """The requested trial resources can never be granted by this Ray cluster (fails before any trial)."""


# ---------------------------------------------------------------------------------------------------
# settings (the optional ``tune:`` section of an adapt config)


@dataclass(frozen=True)
class TuneSettings:
    num_samples: int = 8
    metric: str = "auto"  # auto: miou when the target has labels, else proxy
    max_concurrent_trials: int | None = None  # None: as many as fit (plan_concurrency)
    driver_cpus: float = 1.0  # the trial function (stylize, segment, score run here)
    driver_gpus: float = 0.0  # > 0: the driver stylizes and segments on its GPU share
    epochs_per_rung: int = 1  # SemI2I epochs between two reports (one ASHA iteration)
    grace_period: int = 1  # rungs before ASHA may stop a trial
    reduction_factor: float = 2.0
    finetune_steps: int | None = None  # U-net fine-tune steps per rung (None: the profile's unet.finetune_steps)
    stylize_rasters: int | None = 16  # source rasters stylized per rung, evenly spread (None: all)
    space: dict = field(default_factory=dict)  # key: [low, high] or a fixed value; missing keys: DEFAULT_SPACE
    points_to_evaluate: list | None = None  # None: the profile's own values first (the reference trial)
    seed: int | None = None  # search seed (None: the adapt config's seed)
    max_failures: int = 1  # retries of a failed trial (from its last rung)


_TUNE_KEYS = {f.name for f in dataclasses.fields(TuneSettings)}


def split_config(path: str | Path | None) -> tuple[dict, dict]:
    """(adapt part, tune part) of a config file; ``None`` is the built-in demo (no tune part)."""
    if path is None:
        return {"name": "demo", "synthetic": {}}, {}
    data = read_config_file(path)
    tune_part = data.pop("tune", None) or {}
    if not isinstance(tune_part, dict):
        raise ConfigError(f"{path}: 'tune' must be a mapping of sweep settings")
    data.setdefault("name", Path(path).stem)
    return data, tune_part


def load_sweep_config(path: str | Path | None, *, tune_overrides: Mapping[str, Any] | None = None,
                      **adapt_overrides: Any) -> tuple[AdaptConfig, TuneSettings]:
    """Read an adapt config with an optional ``tune:`` section; every problem is reported at once.

    The adapt part goes through :func:`load_adapt_config` unchanged (``adapt_overrides``: profile, seed,
    workers, gpu); ``tune_overrides`` (command-line values, None = keep) go over the tune section.
    """
    adapt_part, tune_part = split_config(path)
    tune_part = {**tune_part, **{k: v for k, v in (tune_overrides or {}).items() if v is not None}}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as d:  # relative paths resolve from the repo root, not the file
        tmp = Path(d) / "adapt.yaml"
        tmp.write_text(yaml.safe_dump(adapt_part, sort_keys=False))
        try:
            cfg = load_adapt_config(tmp, **{k: v for k, v in adapt_overrides.items() if v is not None})
        except ConfigError as exc:
            cfg = None
            errors.append(str(exc).replace(str(tmp), str(path)))
    settings = _tune_settings(tune_part, cfg, str(path or "<built-in demo>"), errors)
    if errors:
        raise ConfigError("\n".join(errors))
    return cfg, settings


def _tune_settings(data: dict, cfg: AdaptConfig | None, origin: str, errors: list[str]) -> TuneSettings | None:
    for key in data:
        if key not in _TUNE_KEYS:
            errors.append(f"{origin}: unknown key 'tune.{key}' (known: {', '.join(sorted(_TUNE_KEYS))})")
    values = {k: v for k, v in data.items() if k in _TUNE_KEYS}

    def check(key: str, ok: Callable[[Any], bool], wanted: str) -> None:
        if key in values and not (values[key] is not None and not isinstance(values[key], bool) and ok(values[key])):
            if values[key] is None and key in {"max_concurrent_trials", "finetune_steps", "stylize_rasters", "seed",
                                              "points_to_evaluate"}:
                return
            errors.append(f"{origin}: 'tune.{key}' must be {wanted}, got {values[key]!r}")
            values.pop(key)

    is_int = lambda v: isinstance(v, int)  # noqa: E731
    check("num_samples", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    check("metric", lambda v: v in ("auto", *METRICS), f"one of auto, {', '.join(METRICS)}")
    check("max_concurrent_trials", lambda v: is_int(v) and v >= 1, "an integer >= 1 or null")
    check("driver_cpus", lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0")
    check("driver_gpus", lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0")
    check("epochs_per_rung", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    check("grace_period", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    check("reduction_factor", lambda v: isinstance(v, (int, float)) and v > 1, "a number > 1")
    check("finetune_steps", lambda v: is_int(v) and v >= 1, "an integer >= 1 or null")
    check("stylize_rasters", lambda v: is_int(v) and v >= 1, "an integer >= 1 or null")
    check("space", lambda v: isinstance(v, dict), "a mapping of search keys to [low, high] or a value")
    check("points_to_evaluate", lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v), "a list of mappings")
    check("seed", is_int, "an integer or null")
    check("max_failures", lambda v: is_int(v) and v >= 0, "an integer >= 0")
    for key in ("driver_cpus", "driver_gpus", "reduction_factor"):
        if key in values:
            values[key] = float(values[key])
    epochs = cfg.profile.semi2i.epochs if cfg is not None else 10**9  # unknown: the adapt part is reported
    space = {**DEFAULT_SPACE, "decay_epoch": [0, epochs], **(values.get("space") or {})}
    for key, value in space.items():
        where = f"{origin}: 'tune.space.{key}'"
        if key not in SEARCH_KEYS:
            errors.append(f"{where}: unknown search key (known: {', '.join(SEARCH_KEYS)})")
            continue
        is_range = isinstance(value, list)
        items = value if is_range else [value]
        if is_range and len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            errors.append(f"{where}: expected [low, high] or a fixed number, got {value!r}")
            continue
        if key == "decay_epoch":
            if not all(isinstance(v, int) and 0 <= v <= epochs for v in items):
                errors.append(f"{where}: decay epochs are integers in [0, epochs={epochs}], got {value!r}")
        elif is_range and not 0 < value[0] <= value[1]:
            errors.append(f"{where}: a log-uniform range needs 0 < low <= high, got {value!r}")
        elif not is_range and value < 0:
            errors.append(f"{where}: must be >= 0, got {value!r}")
        if is_range and key == "decay_epoch" and value[0] > value[1]:
            errors.append(f"{where}: low > high in {value!r}")
    values["space"] = space
    for point in values.get("points_to_evaluate") or []:
        unknown = set(point) - set(SEARCH_KEYS)
        if unknown:
            errors.append(f"{origin}: 'tune.points_to_evaluate' has unknown keys {sorted(unknown)} "
                          f"(known: {', '.join(SEARCH_KEYS)})")
    if cfg is None:
        return None
    settings = TuneSettings(**values)
    n_rungs = math.ceil(epochs / settings.epochs_per_rung)
    if settings.grace_period > n_rungs:
        errors.append(f"{origin}: 'tune.grace_period' {settings.grace_period} exceeds the {n_rungs} rungs "
                      f"(semi2i.epochs={epochs} / epochs_per_rung={settings.epochs_per_rung})")
    return settings


# ---------------------------------------------------------------------------------------------------
# resources


@dataclass(frozen=True)
class TrialResources:
    driver_cpus: float
    workers: int
    use_gpu: bool
    driver_gpus: float = 0.0

    @property
    def cpus(self) -> float:  # driver + Ray Train workers (1 CPU each on CPU, none on GPU: see _fit)
        return self.driver_cpus + (0 if self.use_gpu else self.workers)

    @property
    def gpus(self) -> float:
        return self.driver_gpus + (self.workers if self.use_gpu else 0)


def plan_concurrency(res: TrialResources, cluster: Mapping[str, float], requested: int | None = None) -> int:
    """How many trials may run at once without deadlock; raises :class:`ResourceError` when the request
    can never be satisfied. The Train workers of a trial are scheduled *after* its driver holds its
    CPUs, so every running trial must be able to hold driver + workers at the same time."""
    cpu, gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    need = (f"{res.driver_cpus:g} driver CPU{f' + {res.driver_gpus:g} driver GPU' if res.driver_gpus else ''} + "
            f"{res.workers} worker(s) x {'1 GPU' if res.use_gpu else '1 CPU'}")
    if res.cpus > cpu + 1e-9 or res.gpus > gpu + 1e-9:
        raise ResourceError(
            f"one trial needs {res.cpus:g} CPU and {res.gpus:g} GPU ({need}) but the Ray cluster has {cpu:g} CPU and "
            f"{gpu:g} GPU: lower --workers or --driver-cpus "
            f"(e.g. on {cpu:g} CPUs: workers <= {max(0, int(cpu - res.driver_cpus))})")
    fits = [int(cpu // res.cpus + 1e-9)] if res.cpus > 0 else []
    if res.gpus:
        fits.append(int(gpu // res.gpus + 1e-9))
    most = max(1, min(fits)) if fits else 1
    if requested is not None and requested > most:
        raise ResourceError(
            f"{requested} concurrent trials need {requested * res.cpus:g} CPU and {requested * res.gpus:g} GPU ({need} each) "
            f"but the Ray cluster has {cpu:g} CPU and {gpu:g} GPU: at most {most} fit at once (more would deadlock)")
    return requested or most


# ---------------------------------------------------------------------------------------------------
# the sweep


@dataclass(frozen=True)
class Sweep:
    """Everything a trial needs (picklable: it travels to the trial actors with ``tune.with_parameters``)."""

    cfg: AdaptConfig
    settings: TuneSettings
    run_dir: Path
    labelled: bool  # the target has labels: the objective is its mIoU
    concurrency: int = 1
    threads: int = 1  # torch threads per Train worker and for the driver's own work

    @property
    def metric(self) -> str:
        if self.settings.metric != "auto":
            return self.settings.metric
        return "miou" if self.labelled else "proxy"

    @property
    def mode(self) -> str:
        return "max" if self.metric == "miou" else "min"

    @property
    def n_rungs(self) -> int:
        return math.ceil(self.cfg.profile.semi2i.epochs / self.settings.epochs_per_rung)

    @property
    def shared_dir(self) -> Path:
        return self.run_dir / "shared"

    @property
    def experiment_path(self) -> Path:
        return self.run_dir / "tune" / EXPERIMENT

    @property
    def resources(self) -> TrialResources:
        return TrialResources(self.settings.driver_cpus, self.cfg.workers, self.cfg.gpu, self.settings.driver_gpus)

    @property
    def scaling(self) -> Scaling:
        return Scaling(num_workers=self.cfg.workers, use_gpu=self.cfg.gpu, threads_per_worker=self.threads)

    def trial_dir(self, trial_id: str) -> Path:
        return self.run_dir / "trials" / trial_id


def make_sweep(cfg: AdaptConfig, settings: TuneSettings, run_dir: str | Path, *, labelled: bool | None = None,
               cluster: Mapping[str, float] | None = None) -> Sweep:
    """Check the resources against the running Ray cluster (fails fast) and size threads per process.
    ``labelled`` defaults to whether the config gives target labels (the synthetic demo has them)."""
    if labelled is None:
        labelled = cfg.synthetic is not None or (cfg.target is not None and cfg.target.labels is not None)
    if settings.metric == "miou" and not labelled:
        raise ConfigError("tune.metric miou needs target labels; this target has none (use proxy or auto)")
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    res = TrialResources(settings.driver_cpus, cfg.workers, cfg.gpu, settings.driver_gpus)
    concurrency = plan_concurrency(res, cluster, settings.max_concurrent_trials)
    per_trial = min(float(cluster.get("CPU", 1)) / concurrency, float(os.cpu_count() or 1))
    threads = max(1, int(per_trial) // cfg.workers)
    return Sweep(cfg, settings, Path(run_dir).resolve(), labelled, concurrency, threads)


def prepare_shared(sweep: Sweep) -> dict:
    """Ingest both cities and train the source-only U-net once for all trials (AdaptRun's own stages,
    skipped when done), and score the source-only U-net on the target as the sweep's baseline."""
    run = AdaptRun(dataclasses.replace(sweep.cfg, methods=("source_only",)), sweep.shared_dir)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.stage_ingest()
    run.stage_unet_source()
    if not run.store("target").has_labels:
        return {"source_only_miou": None}
    run.stage_segment()  # only the source-only U-net: maps/ + scores/source_only.json
    return {"source_only_miou": json.loads(run.path("scores", "source_only.json").read_text()).get("miou")}


def search_space(sweep: Sweep) -> dict:
    from ray import tune

    space = {}
    for key, value in sweep.settings.space.items():
        if not isinstance(value, list):
            space[key] = value
        elif key == "decay_epoch":
            space[key] = tune.randint(value[0], value[1] + 1)
        else:
            space[key] = tune.loguniform(float(value[0]), float(value[1]))
    return space


def initial_points(sweep: Sweep) -> list[dict]:
    """The configured points, else the profile's own values (the reference every sweep should beat)."""
    searched = [k for k, v in sweep.settings.space.items() if isinstance(v, list)]
    points = sweep.settings.points_to_evaluate
    if points is None:
        base = sweep.cfg.profile.semi2i
        points = [{k: getattr(base, k) for k in SEARCH_KEYS}]
    return [{k: v for k, v in p.items() if k in searched} for p in points][: sweep.settings.num_samples]


def trial_semi2i_config(base: SemI2IConfig, config: Mapping[str, Any], seed: int) -> SemI2IConfig:
    values = {k: float(config[k]) for k in LAMBDAS if k in config}
    if "decay_epoch" in config:
        values["decay_epoch"] = int(config["decay_epoch"])
    return dataclasses.replace(base, seed=seed, **values)


RungFn = Callable[[Sweep, dict, int, Path], dict]


def trial_main(config: dict, sweep: Sweep, rung_fn: RungFn) -> None:
    """A Tune trial: rungs ``1..n_rungs``, each reported with a checkpoint holding its number, so a
    restored or retried trial continues after its last reported rung (its files are in its trial dir)."""
    from ray import tune

    trial_dir = sweep.trial_dir(tune.get_context().get_trial_id())
    trial_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int(json.loads((Path(d) / "rung.json").read_text())["rung"])
    for rung in range(start + 1, sweep.n_rungs + 1):
        metrics = rung_fn(sweep, dict(config), rung, trial_dir)
        metrics = {**metrics, "rung": rung}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "rung.json").write_text(json.dumps(metrics))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def build_tuner(sweep: Sweep, rung_fn: RungFn | None = None, *, verbose: int = 1):
    """A new Tuner, or the sweep's own restored from ``<run-dir>/tune/sweep`` (resumes unfinished and errored trials)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    resources = {"cpu": sweep.settings.driver_cpus, "gpu": sweep.settings.driver_gpus}
    trainable = tune.with_resources(tune.with_parameters(trial_main, sweep=sweep, rung_fn=rung_fn or evaluate_rung), resources)
    if tune.Tuner.can_restore(str(sweep.experiment_path)):
        log.info("resuming the sweep in %s (its search settings are kept; --fresh starts over)", sweep.experiment_path)
        return tune.Tuner.restore(str(sweep.experiment_path), trainable=trainable, resume_errored=True)
    s = sweep.settings
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=sweep.n_rungs, grace_period=s.grace_period,
                              reduction_factor=s.reduction_factor)
    seed = s.seed if s.seed is not None else sweep.cfg.seed
    # the concurrency limit must sit on the generator: Tune ignores max_concurrent_trials for a
    # SearchGenerator (it only warns), and every extra live trial would hold a driver CPU its peers' workers need
    search = BasicVariantGenerator(points_to_evaluate=initial_points(sweep) or None, random_state=seed,
                                   max_concurrent=sweep.concurrency)
    return tune.Tuner(
        trainable,
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, search_alg=search, scheduler=scheduler,
                                    num_samples=s.num_samples),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(sweep.experiment_path.parent),
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose,
        ),
    )


def run_sweep(sweep: Sweep, rung_fn: RungFn | None = None, *, verbose: int = 1, baseline: dict | None = None) -> dict:
    """Run (or resume) the sweep, then write results.csv/.md, rungs.csv and best.yaml; returns a summary."""
    grid = build_tuner(sweep, rung_fn, verbose=verbose).fit()
    rows, rungs = collect(sweep, grid)
    return write_outputs(sweep, rows, rungs, baseline=baseline)


# ---------------------------------------------------------------------------------------------------
# one rung of a real trial


def evaluate_rung(sweep: Sweep, config: dict, rung: int, trial_dir: Path) -> dict:
    """Continue SemI2I to this rung's epoch, stylize, fine-tune, segment + score the target, compute the proxy."""
    import torch

    from semi2i.data.patches import city_windows
    from semi2i.mapping import map_region, read_classes
    from semi2i.metrics import confusion_matrix, scores
    from semi2i.stylize import stylize_city
    from semi2i.stylizers import load_stylizer
    from semi2i.training.distributed import fit_semi2i, fit_unet
    from semi2i.training.semi2i_trainer import steps_per_epoch

    rung_dir = trial_dir / f"rung{rung}"
    done = rung_dir / "metrics.json"
    if done.exists():  # computed before an interruption, not yet reported
        return json.loads(done.read_text())
    started = time.perf_counter()
    torch.set_num_threads(max(1, sweep.threads * sweep.cfg.workers))
    p, shared = sweep.cfg.profile, AdaptRun(sweep.cfg, sweep.shared_dir)
    source, target = shared.store("source"), shared.store("target")

    # 1. SemI2I up to this rung's epoch (Ray Train restores the trial's previous rung from trial_dir/ray/semi2i)
    cfg = trial_semi2i_config(p.semi2i, config, sweep.cfg.seed)
    windows = [len(city_windows(s, cfg.patch_size, p.overlap)) for s in (source, target)]
    spe = max(1, steps_per_epoch(cfg, *windows) // sweep.cfg.workers)  # as semi2i_worker_loop counts
    epochs = min(rung * sweep.settings.epochs_per_rung, cfg.epochs)
    fit_semi2i(cfg, source.path, target.path, trial_dir, overlap=p.overlap, scaling=sweep.scaling, max_steps=epochs * spe)
    t_semi2i = time.perf_counter()

    # 2. stylize (a subset of) the source
    subset = _RasterSubset(source, sweep.settings.stylize_rasters)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU only with driver_gpus > 0
    stylizer = load_stylizer("semi2i", source_stats=source.band_stats, target_stats=target.band_stats,
                             checkpoint=trial_dir / "semi2i.pt", overlap=p.overlap, device=device)
    stylized = stylize_city(subset, stylizer, rung_dir / "stylized", target_dtype=target.dtype,
                            name=f"{source.name}-semi2i", overwrite=True)
    t_stylize = time.perf_counter()

    # 3. fine-tune the shared source U-net on it (from scratch with the target's normaliser if the band counts differ)
    same_bands = source.num_bands == target.num_bands
    init = shared.unet_path("source_only") if same_bands else None
    steps = sweep.settings.finetune_steps or (p.unet.finetune_steps if same_bands else p.unet.train_steps)
    unet = rung_dir / "unet.pt"
    fit_unet(p.unet, [stylized.path], trial_dir, stage=f"finetune_rung{rung}", output=str(unet.relative_to(trial_dir)),
             init=init, stats=None if init else target.band_stats, steps=steps, overlap=p.overlap, seed=sweep.cfg.seed,
             scaling=sweep.scaling, checkpoint_every=max(1, steps // 2))
    t_finetune = time.perf_counter()

    # 4. segment + score the target (only worth it with labels), and the unsupervised proxy
    metrics: dict[str, Any] = {}
    if target.has_labels:
        maps = rung_dir / "maps"
        map_region(target.path, unet, maps, overlap=p.overlap, use_ray=False, cog=False, quicklook=False, overwrite=True)
        cm = sum(confusion_matrix(read_classes(maps, r.id), target.dataset(r.id).label.values, target.num_classes,
                                  target.ignore_index) for r in target.rasters)
        score = scores(cm, target.class_names)
        metrics.update(miou=_num(score["miou"]), pixel_accuracy=_num(score["pixel_accuracy"]))
    metrics.update(proxy_metrics(subset, stylized, target))
    now = time.perf_counter()
    metrics.update(semi2i_epochs=epochs, semi2i_steps=epochs * spe, finetune_steps=steps,
                   semi2i_s=round(t_semi2i - started, 2), stylize_s=round(t_stylize - t_semi2i, 2),
                   finetune_s=round(t_finetune - t_stylize, 2), segment_s=round(now - t_finetune, 2),
                   rung_s=round(now - started, 2))
    _atomic_json(done, metrics)
    _prune(trial_dir, rung)
    log.info("trial %s rung %d: %s", trial_dir.name, rung, {k: metrics[k] for k in ("miou", "proxy", "rung_s") if k in metrics})
    return metrics


class _RasterSubset:
    """A city store seen through at most ``n`` of its rasters, evenly spread (duck-typed for stylize_city)."""

    def __init__(self, store, n: int | None):
        self._store = store
        rasters = list(store.rasters)
        if n is not None and n < len(rasters):
            rasters = [rasters[int(i * len(rasters) / n)] for i in range(n)]
        self.rasters = rasters

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _prune(trial_dir: Path, rung: int) -> None:
    """Keep the metrics of every rung but the bulky outputs (stylized source, U-net, maps, Train runs)
    of the last one only."""
    old = trial_dir / f"rung{rung - 1}"
    for name in ("stylized", "maps", "unet.pt"):
        path = old / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    shutil.rmtree(trial_dir / "ray" / f"finetune_rung{rung - 1}", ignore_errors=True)


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------------------------------------------
# the unsupervised proxy (lower is better)


def style_distance(fake: BandStats, target: BandStats) -> float:
    """How far the fakes' pixel distribution is from the target's: per band, the 1-D Wasserstein
    distance (mean |quantile difference| over the 1001 quantiles kept at ingest) in units of the target
    band's standard deviation, averaged over bands. 0 = identical histograms; a shift by c gives c/std."""
    if fake.num_bands != target.num_bands:
        raise ValueError(f"fake has {fake.num_bands} bands, target {target.num_bands}")
    diff = np.abs(np.asarray(fake.quantiles, np.float64) - np.asarray(target.quantiles, np.float64))
    w1 = np.trapezoid(diff, QUANTILE_LEVELS, axis=1)
    return float(np.mean(w1 / np.maximum(np.asarray(target.std, np.float64), 1e-6)))


def _edges(image: np.ndarray, stats: BandStats, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed x and y gradients of the band-mean of z-scored bands (any band count), stacked, and where
    they are defined. Signed, not magnitudes: a generator that inverts tones (dark water painted light,
    light land painted dark, seen on the Dubai bright -> sensor-D pair) keeps every edge's position but
    flips its sign, and that ruins fine-tuning as surely as a lost edge."""
    from semi2i.diagnostics import luminance

    lum = luminance(image, stats)
    gy = lum[1:, :-1] - lum[:-1, :-1]
    gx = lum[:-1, 1:] - lum[:-1, :-1]
    ok = valid[:-1, :-1] & valid[1:, :-1] & valid[:-1, 1:]
    return np.stack([gx, gy]), np.stack([ok, ok])


def structure_loss(source: np.ndarray, fake: np.ndarray, source_stats: BandStats, fake_stats: BandStats,
                   valid: np.ndarray | None = None) -> tuple[float, int]:
    """1 − Pearson correlation of the signed gradients of a source raster and its fake (in [0, 2]):
    0 when the fake keeps every edge and its direction (any brightening, darkening or contrast change),
    ~1 when the structure is lost (noise, a flat image), ~2 when the tones are inverted. Returns (loss,
    pixels counted)."""
    if valid is None:
        valid = np.ones(source.shape[1:], bool)
    e_src, ok = _edges(source, source_stats, valid)
    e_fake, _ = _edges(fake, fake_stats, valid)
    a, b = e_src[ok], e_fake[ok]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 1.0, int(a.size)
    return float(1.0 - np.corrcoef(a, b)[0, 1]), int(a.size) // 2


def proxy_metrics(source, fake, target) -> dict:
    """``proxy = style_distance + structure_loss`` of a stylized source (``fake``, rasters named as the
    source's) against the target and the source; both terms are 0 for a perfect SemI2I output."""
    style = style_distance(fake.band_stats, target.band_stats)
    total, weight = 0.0, 0
    for info in source.rasters:
        src = source.dataset(info.id).image.values
        loss, n = structure_loss(src, fake.dataset(info.id).image.values, source.band_stats, fake.band_stats,
                                 source.valid_mask(src))
        total, weight = total + loss * n, weight + n
    structure = total / weight if weight else 1.0
    return {"proxy": style + structure, "style_distance": style, "structure_loss": structure}


# ---------------------------------------------------------------------------------------------------
# outputs


def collect(sweep: Sweep, grid) -> tuple[list[dict], list[dict]]:
    """One row per trial (last reported rung) and one per reported rung."""
    rows, rungs = [], []
    for result in grid:
        metrics = dict(result.metrics or {})
        config = {k: result.config.get(k) for k in SEARCH_KEYS}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        n = int(metrics.get("training_iteration", 0))
        status = ("error" if result.error else "completed" if n >= sweep.n_rungs else "stopped early" if n else "not started")
        rows.append({"trial": trial_id, "status": status, "rungs": n, **config,
                     **{k: metrics.get(k) for k in ("miou", "proxy", "style_distance", "structure_loss", "semi2i_epochs")},
                     "error": str(result.error).splitlines()[0][:200] if result.error else ""})
        df = result.metrics_dataframe
        if df is not None and len(df):
            for rec in df.to_dict("records"):
                rungs.append({"trial": trial_id, "rung": rec.get("rung"), **config,
                              **{k: rec.get(k) for k in ("miou", "proxy", "style_distance", "structure_loss", "rung_s")}})
    sign = -1 if sweep.mode == "max" else 1

    def key(row: dict) -> tuple:
        value = row.get(sweep.metric)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (missing, sign * value if not missing else 0.0, str(row["trial"]))  # ties: trial order

    rows.sort(key=key)
    rungs.sort(key=lambda r: (str(r["trial"]), r["rung"] or 0))
    return rows, rungs


def pick_best(sweep: Sweep, rows: list[dict]) -> dict | None:
    """The best trial among those that ran every rung (the full schedule), else the best of all."""
    scored = [r for r in rows if _finite(r.get(sweep.metric))]
    full = [r for r in scored if r["rungs"] >= sweep.n_rungs]
    return (full or scored or [None])[0]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def proxy_tracking(rungs: list[dict]) -> dict | None:
    """Spearman rank correlation between mIoU and −proxy over every rung report (1 = the proxy ranks
    rungs exactly as the mIoU does), or None without enough labelled points."""
    pairs = [(r["miou"], r["proxy"]) for r in rungs if _finite(r.get("miou")) and _finite(r.get("proxy"))]
    if len(pairs) < 3:
        return None
    miou, proxy = np.array(pairs).T
    if miou.std() == 0 or proxy.std() == 0:
        return None
    from scipy.stats import spearmanr

    return {"spearman": float(spearmanr(miou, -proxy).statistic), "points": len(pairs)}


def best_config(sweep: Sweep, best: dict) -> dict:
    """The adapt config with the winner's λ / decay epoch under overrides.semi2i (other overrides kept)."""
    from semi2i.config import _deep_merge, _expand_dotted

    raw = {k: v for k, v in sweep.cfg.raw.items() if k != "tune"}
    winners = {k: (int(best[k]) if k == "decay_epoch" else float(best[k])) for k in SEARCH_KEYS if best.get(k) is not None}
    overrides = _deep_merge(_expand_dotted(dict(raw.get("overrides") or {})), {"semi2i": winners})
    out = {**raw, "name": f"{sweep.cfg.name}-tuned", "profile": sweep.cfg.profile.name, "seed": sweep.cfg.seed,
           "overrides": overrides}
    return out


def write_outputs(sweep: Sweep, rows: list[dict], rungs: list[dict], *, baseline: dict | None = None) -> dict:
    run_dir = sweep.run_dir
    columns = [*RESULT_COLUMNS, "error"]  # results.md's columns (same order), plus the error message
    _write_csv(run_dir / "results.csv", [{"rank": i + 1, **r} for i, r in enumerate(rows)], columns)
    _write_csv(run_dir / "rungs.csv", rungs, ["trial", "rung", *SEARCH_KEYS, "miou", "proxy", "style_distance",
                                               "structure_loss", "rung_s"])
    best = pick_best(sweep, rows)
    tracking = proxy_tracking(rungs)
    summary = {"metric": sweep.metric, "mode": sweep.mode, "rungs": sweep.n_rungs, "trials": len(rows),
               "settings": dataclasses.asdict(sweep.settings), "concurrency": sweep.concurrency,
               "best": best, "proxy_tracking": tracking, "baseline": baseline or {},
               "results": str(run_dir / "results.md"), "best_config": None}
    if best is not None:
        path = run_dir / "best.yaml"
        header = (f"# jobs/tune.py winner: trial {best['trial']}, {sweep.metric} = {best[sweep.metric]:.4g} "
                  f"({sweep.mode}) after {best['rungs']} of {sweep.n_rungs} rungs.\n"
                  f"# Run it: python jobs/adapt.py --config {path}\n")
        _atomic_text(path, header + yaml.safe_dump(best_config(sweep, best), sort_keys=False))
        load_adapt_config(path)  # what we hand out must load
        summary["best_config"] = str(path)
    _atomic_text(run_dir / "results.md", results_markdown(sweep, rows, best, tracking, baseline or {}))
    _atomic_text(run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def results_markdown(sweep: Sweep, rows: list[dict], best: dict | None, tracking: dict | None, baseline: dict) -> str:
    s = sweep.settings
    lines = [f"# SemI2I sweep: {sweep.cfg.name} ({sweep.cfg.profile.name} profile)", "",
             f"Objective: **{sweep.metric}** ({sweep.mode}imize) after each rung of {s.epochs_per_rung} SemI2I epoch(s); "
             f"ASHA (grace {s.grace_period}, reduction factor {s.reduction_factor:g}, {sweep.n_rungs} rung(s)). "
             "proxy = style distance + structure loss (lower is better; see README, Tuning)."]
    if baseline.get("source_only_miou") is not None:
        lines.append(f"\nSource-only U-net on the target: mIoU {baseline['source_only_miou']:.2f}.")
    if tracking:
        lines.append(f"\nProxy vs mIoU over {tracking['points']} rung reports: Spearman ρ(mIoU, −proxy) = "
                     f"{tracking['spearman']:.2f} (1: the proxy ranks like the mIoU).")
    header = list(RESULT_COLUMNS.values())
    lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for i, r in enumerate(rows):
        row = {**r, "rank": i + 1}
        if best is not None and r["trial"] == best["trial"]:
            row["trial"] = f"{r['trial']} **(best)**"
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in RESULT_COLUMNS) + " |")
    if best is not None:
        path = sweep.run_dir / "best.yaml"
        lines += ["", f"Best config: `{path}` (`python jobs/adapt.py --config {path}`)."]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    """A results.md cell: text as is, numbers as :func:`_fmt` writes them."""
    return value if isinstance(value, str) else _fmt(value)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4g}"


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_json(path: Path, data: dict) -> None:
    _atomic_text(path, json.dumps(data, indent=1))
