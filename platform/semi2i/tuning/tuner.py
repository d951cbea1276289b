"""The Ray Tune wiring of a sweep: the search space and initial points, a trial as a Tune function
(rung by rung, each reported with a checkpoint), the Tuner (ASHA, new or restored), and
:func:`run_sweep`, which runs it and writes the outputs."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

from semi2i import placement
from semi2i.tuning.outputs import collect, write_outputs
from semi2i.tuning.rung import evaluate_rung
from semi2i.tuning.settings import SEARCH_KEYS
from semi2i.tuning.sweep import EXPERIMENT, Sweep

log = logging.getLogger(__name__)


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


def trial_resources(sweep: Sweep):
    """What each trial actor reserves: the sweep's driver CPUs and GPUs, on the driver's node (a label
    selector on its node id) when the run folder is on object storage and other machines are in the
    cluster, since the trials then work in the driver's local copy (refused in one line if that node
    cannot hold a trial)."""
    from ray.tune import PlacementGroupFactory

    cpus, gpus = sweep.settings.driver_cpus, sweep.settings.driver_gpus
    with placement.on_driver_node(sweep.on_object_storage):
        selector = placement.node_selector()
        placement.check_driver_node("a sweep's trial", cpus=cpus, gpus=gpus)
    if selector is None:
        return {"cpu": cpus, "gpu": gpus}
    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return PlacementGroupFactory([bundle], bundle_label_selector=[selector])


def build_tuner(sweep: Sweep, rung_fn: RungFn | None = None, *, verbose: int = 1):
    """A new Tuner, or the sweep's own restored from ``<run-dir>/tune/sweep`` (resumes unfinished and errored trials)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = tune.with_resources(tune.with_parameters(trial_main, sweep=sweep, rung_fn=rung_fn or evaluate_rung),
                                    trial_resources(sweep))
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
