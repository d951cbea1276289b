"""One rung of a real trial (:func:`evaluate_rung`): continue SemI2I, stylize the source, fine-tune the
shared U-net on it, segment + score the target, compute the label-free score and the unsupervised proxy:
the adapt run's stages, through its stage runner."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from semi2i.config import SemI2IConfig
from semi2i.domain_distance import store_distance
from semi2i.pipeline import AdaptRun, score_maps
from semi2i.placement import run_stages
from semi2i.tuning.outputs import atomic_json
from semi2i.tuning.proxy import proxy_metrics
from semi2i.tuning.settings import LAMBDAS
from semi2i.tuning.sweep import Sweep

log = logging.getLogger(__name__)


def trial_semi2i_config(base: SemI2IConfig, config: Mapping[str, Any], seed: int) -> SemI2IConfig:
    values = {k: float(config[k]) for k in LAMBDAS if k in config}
    if "decay_epoch" in config:
        values["decay_epoch"] = int(config["decay_epoch"])
    return dataclasses.replace(base, seed=seed, **values)


def evaluate_rung(sweep: Sweep, config: dict, rung: int, trial_dir: Path) -> dict:
    """Continue SemI2I to this rung's epoch, stylize, fine-tune, segment + score the target, compute the
    label-free score (:mod:`semi2i.domain_distance`, as the adapt run's report has it) and the proxy.

    The stages go through the adapt run's stage runner (:func:`semi2i.placement.run_stages`), with their
    pieces in this process: the trial actor, which Tune placed on a worker node with the CPUs (and GPUs)
    the sweep reserved for it; pieces sent to the cluster would compete with the other trials'
    reservations (:func:`~semi2i.tuning.resources.plan_concurrency` packs trials by them). Where the work
    ran goes to ``rung<k>/placement.json``."""
    import torch

    from semi2i.data.patches import city_windows
    from semi2i.mapping import map_region
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
    cfg = trial_semi2i_config(p.semi2i, config, sweep.cfg.seed)
    windows = [len(city_windows(s, cfg.patch_size, p.overlap)) for s in (source, target)]
    spe = max(1, steps_per_epoch(cfg, *windows) // sweep.cfg.workers)  # as semi2i_worker_loop counts
    epochs = min(rung * sweep.settings.epochs_per_rung, cfg.epochs)
    same_bands = source.num_bands == target.num_bands
    init = shared.unet_path("source_only") if same_bands else None
    steps = sweep.settings.finetune_steps or (p.unet.finetune_steps if same_bands else p.unet.train_steps)
    subset = _RasterSubset(source, sweep.settings.stylize_rasters)
    unet, maps = rung_dir / "unet.pt", rung_dir / "maps"
    metrics: dict[str, Any] = {}
    made: dict[str, Any] = {}  # what one stage hands to the next

    def train_semi2i() -> None:  # up to this rung's epoch (Ray Train restores the previous rung from trial_dir/ray/semi2i)
        fit_semi2i(cfg, source.path, target.path, trial_dir, overlap=p.overlap, scaling=sweep.scaling, max_steps=epochs * spe)

    def stylize() -> None:  # (a subset of) the source
        device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU only with driver_gpus > 0
        stylizer = load_stylizer("semi2i", source_stats=source.band_stats, target_stats=target.band_stats,
                                 checkpoint=trial_dir / "semi2i.pt", overlap=p.overlap, device=device,
                                 precision=cfg.precision)
        made["stylized"] = stylize_city(subset, stylizer, rung_dir / "stylized", target_dtype=target.dtype,
                                        name=f"{source.name}-semi2i", overwrite=True)

    def finetune() -> None:  # the shared source U-net (from scratch with the target's normaliser if the band counts differ)
        fit_unet(p.unet, [made["stylized"].path], trial_dir, stage=f"finetune_rung{rung}", output=str(unet.relative_to(trial_dir)),
                 init=init, stats=None if init else target.band_stats, steps=steps, overlap=p.overlap, seed=sweep.cfg.seed,
                 scaling=sweep.scaling, checkpoint_every=max(1, steps // 2))

    def segment() -> None:  # segment + score the target (only worth it with labels), and the label-free scores
        if target.has_labels:
            map_region(target.path, unet, maps, overlap=p.overlap, use_ray=False, cog=False, quicklook=False, overwrite=True)
            score = score_maps(target, maps)  # the adapt run's scoring
            metrics.update(miou=_num(score["miou"]), pixel_accuracy=_num(score["pixel_accuracy"]))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        free = store_distance(unet, made["stylized"].path, target.path, device=device)
        metrics.update(label_free=free["label_free"], **{f"distance_{k}": v for k, v in free["distance"].items()})
        metrics.update(proxy_metrics(subset, made["stylized"], target))

    seconds = run_stages([("semi2i", train_semi2i), ("stylize", stylize), ("finetune", finetune), ("segment", segment)],
                         cluster=False, driver_node=sweep.on_object_storage,
                         after=lambda where: atomic_json(rung_dir / "placement.json", {"stages": where}))
    metrics.update(semi2i_epochs=epochs, semi2i_steps=epochs * spe, finetune_steps=steps,
                   **{f"{stage}_s": round(s, 2) for stage, s in seconds.items()},
                   rung_s=round(time.perf_counter() - started, 2))
    atomic_json(done, metrics)
    _prune(trial_dir, rung)
    log.info("trial %s rung %d: %s", trial_dir.name, rung,
             {k: metrics[k] for k in ("miou", "label_free", "proxy", "rung_s") if k in metrics})
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
