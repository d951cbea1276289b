"""One sweep (:class:`Sweep`: the adapt config, the settings, the run folder, resources and threads per
process, the objective), checked against the running Ray cluster (:func:`make_sweep`), and the stages
every trial shares (:func:`prepare_shared`)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from semi2i import placement
from semi2i.config import ConfigError
from semi2i.adapt_config import AdaptConfig
from semi2i.pipeline import AdaptRun
from semi2i.training.distributed import Scaling
from semi2i.tuning.resources import TrialResources, plan_concurrency
from semi2i.tuning.settings import TuneSettings

EXPERIMENT = "sweep"


@dataclass(frozen=True)
class Sweep:
    """Everything a trial needs (picklable: it travels to the trial actors with ``tune.with_parameters``)."""

    cfg: AdaptConfig
    settings: TuneSettings
    run_dir: Path
    labelled: bool  # the target has labels: the default objective is its mIoU, else the label-free score
    concurrency: int = 1
    threads: int = 1  # torch threads per Train worker and for the driver's own work
    # the run folder is the driver's local copy of an object-storage one (semi2i.remote_run): the trials,
    # their stages and their Ray Train workers must stay on the driver's node (semi2i.placement.on_driver_node)
    on_object_storage: bool = False

    @property
    def metric(self) -> str:
        if self.settings.metric != "auto":
            return self.settings.metric
        return "miou" if self.labelled else "label_free"

    @property
    def mode(self) -> str:
        return "min" if self.metric == "proxy" else "max"  # the proxy is a loss; mIoU and label_free: higher = better

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
               cluster: Mapping[str, float] | None = None, on_object_storage: bool = False) -> Sweep:
    """Check the resources against the running Ray cluster (fails fast) and size threads per process.
    ``labelled`` defaults to whether the config gives target labels (the synthetic demo has them). With
    ``on_object_storage`` the trials are planned on the driver's node alone when they must stay there."""
    if labelled is None:
        labelled = cfg.synthetic is not None or (cfg.target is not None and cfg.target.labels is not None)
    if settings.metric == "miou" and not labelled:
        raise ConfigError("tune.metric miou needs target labels; this target has none (use label_free or auto)")
    if cluster is None:
        with placement.on_driver_node(on_object_storage):
            cluster = _resources_in_reach()
    res = TrialResources(settings.driver_cpus, cfg.workers, cfg.gpu, settings.driver_gpus)
    concurrency = plan_concurrency(res, cluster, settings.max_concurrent_trials)
    per_trial = min(float(cluster.get("CPU", 1)) / concurrency, float(placement.node_cpus()))
    threads = max(1, int(per_trial) // cfg.workers)
    return Sweep(cfg, settings, Path(run_dir).resolve(), labelled, concurrency, threads, on_object_storage)


def _resources_in_reach() -> dict[str, float]:
    """The CPUs and GPUs of the nodes trials may use (:func:`semi2i.placement.nodes_in_reach`)."""
    totals: dict[str, float] = {}
    for node in placement.nodes_in_reach():
        for key in ("CPU", "GPU"):
            totals[key] = totals.get(key, 0.0) + float(node["Resources"].get(key, 0))
    return totals


def prepare_shared(sweep: Sweep) -> dict:
    """Ingest both cities and train the source-only U-net once for all trials (AdaptRun's own stages,
    skipped when done), and score the source-only U-net on the target as the sweep's baseline."""
    run = AdaptRun(dataclasses.replace(sweep.cfg, methods=("source_only",)), sweep.shared_dir)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    # the pixel work as Ray tasks, not in the sweep's driver (on its node for a run on object storage)
    with placement.on_cluster(), placement.on_driver_node(sweep.on_object_storage):
        run.stage_ingest()
        run.stage_unet_source()
        if not run.store("target").has_labels:
            return {"source_only_miou": None}
        run.stage_segment()  # only the source-only U-net: maps/ + scores/source_only.json
    return {"source_only_miou": json.loads(run.path("scores", "source_only.json").read_text()).get("miou")}
