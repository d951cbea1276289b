"""The adapt pipeline (paper §2-3 end to end), one resumable stage per function, one run folder.

    ingest -> {unet_source, colormapgan, cyclegan, semi2i} -> stylize -> finetune -> segment (+ score) -> report

(the four trainings in braces need only the ingested cities and run side by side: :mod:`semi2i.trainings`).
Between ingest and report, SemI2I's chain of stages and the other methods' chain run at once where the
cluster has room for both (:mod:`semi2i.lanes`), each stage on its lane's methods.

Every stage writes its outputs atomically into the run folder and is skipped when they exist, so a
run that was interrupted resumes where it stopped. The run folder::

    stores/{source,target}.zarr          ingested cities
    unet_source.pt, unet_<method>.pt     U-nets (source-only, fine-tuned per stylizer, target oracle)
    source_fit.json, source_fit/         the source U-net's fit on its own city, each attempt (semi2i.source_fit)
    semi2i.pt                            SemI2I training state (weights, optimizers, global stats)
    colormapgan.pt, cyclegan.pt          the GAN baselines' training states (same Ray Train loop)
    stylized/<method>/                   the stylized source: GeoTIFFs + store.zarr (source labels)
    maps/<method>/                       the target mapped by jobs/map_region.py's code: maps.zarr, cog/*.tif
    scores/<method>.json                 confusion matrix + IoU per method
    label_free/<method>.json             the label-free score of each method's U-net (semi2i.label_free)
    guard/<method>.json, guard/unet_*.pt the do-no-harm decision and a fine-tune averaged away (semi2i.finetune_guard)
    reference/                           the colour-blind reference U-net and each map's agreement with it (semi2i.colour_blind)
    report.json, report.md, previews/    the comparison (report.json is a contract other tools read)
    tensorboard/, ray/                   training curves and Ray Train's checkpoints
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from semi2i.adapt_config import (GAN_METHODS, PER_BAND_METHODS, STAGES, STYLIZED_METHODS, TRAINING_STAGES, AdaptConfig,
                                 CitySpec)
from semi2i import placement
from semi2i.config import ConfigError
from semi2i.locations import write_text
from semi2i.data.ingest import ingest_city
from semi2i.data.store import CityStore
from semi2i.map_scores import score_maps
from semi2i.preflight import check_run, not_applicable
from semi2i.remote_run import RemoteRun
from semi2i.adapt_report import build_report
from semi2i.finetune_guard import guard, prepare_fine_tune
from semi2i.label_free import score_methods
from semi2i.colour_blind import agreements
from semi2i.lanes import adapt_lanes, run_lanes
from semi2i.report_table import report_markdown
from semi2i.semi2i_seeds import base_method, choose, seed_methods, seed_trainings
from semi2i.source_fit import train_checked_source_unet
from semi2i.training.distributed import Scaling, fit_colormapgan, fit_cyclegan, fit_semi2i, fit_unet, fit_unets, unet_job
from semi2i.trainings import Training, run_trainings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------
# the run


class RunFolder:
    """What the adapt and the multi-city runs share: the run folder, its ingested stores, the resolved
    config, the Ray Train scaling and the stage timings."""

    def __init__(self, cfg: Any, run_dir: str | Path):
        # a run folder on object storage (s3://...) is worked on in a local copy, published after each stage
        self.remote = RemoteRun.of(run_dir)
        # absolute: the stages' pieces run as Ray tasks in other working directories (semi2i.placement)
        self.cfg, self.run_dir = cfg, (self.remote.local if self.remote else Path(run_dir)).absolute()
        self.scaling = Scaling(num_workers=cfg.workers, use_gpu=cfg.gpu, data=cfg.data_plane)
        self.timings: dict[str, float] = {}

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def pull(self) -> None:
        """Fetch the published outputs of a run folder on object storage (what a resumed run skips on)."""
        if self.remote and (n := self.remote.pull()):
            log.info("fetched %d published files of %s", n, self.remote.url)

    def publish(self) -> None:
        """Upload what the last stage wrote to a run folder on object storage (commit objects last)."""
        if self.remote and (n := self.remote.publish()):
            log.info("published %d files to %s", n, self.remote.url)

    def store(self, name: str) -> CityStore:
        """The ingested store ``stores/<name>.zarr`` (a role, source/target, or a city name)."""
        path = self.path("stores", f"{name}.zarr")
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (run the ingest stage first)")
        return CityStore(path)

    def resolved_config(self) -> dict:
        """What ``config.resolved.yaml`` holds: the config file's keys and every setting the run used."""
        resolved = {**self.cfg.raw, "profile": self.cfg.profile.name, "seed": self.cfg.seed, "workers": self.cfg.workers,
                    "gpu": self.cfg.gpu, "resolved_profile": dataclasses.asdict(self.cfg.profile)}
        return yaml.safe_load(yaml.safe_dump(resolved))  # as read back from the file (tuples become lists)

    def run_stages(self, steps: list[tuple[str, Callable[[], None]]]) -> None:
        """Run each ``(stage, step)`` in order, the one stage runner of the adapt and multi-city runs: the
        stages' pixel work goes to Ray tasks when Ray is up (:mod:`semi2i.placement`; on the driver's node
        for a run folder on object storage); after each stage its
        outputs are published (a run folder on object storage), its time kept in ``timings`` and where its
        work ran in ``placement.json``."""
        # a run on object storage: its pieces write into this node's local copy, so they stay on this node
        placement.run_stages(steps, timings=self.timings, after=self.after_stage, driver_node=self.remote is not None)

    def after_stage(self, where: dict[str, list[dict]]) -> None:
        """What follows every stage: ``placement.json`` updated, the outputs published (object storage)."""
        self.record_placement(where)
        self.publish()

    def record_placement(self, where: dict[str, list[dict]]) -> None:
        """``placement.json``: the driver, and the nodes and processes each stage's pixel work ran in (a
        resumed run keeps the record of the stages it does not redo)."""
        path = self.path("placement.json")
        earlier = json.loads(path.read_text()).get("stages", {}) if path.exists() else {}
        record = {"driver": placement.here(), "stages": {**earlier, **where}}
        write_text(path, json.dumps(record, indent=1))

    def _write_resolved_config(self) -> None:
        write_text(self.path("config.resolved.yaml"), yaml.safe_dump(self.resolved_config(), sort_keys=False))


class AdaptRun(RunFolder):
    """Runs the stages of one adaptation in ``run_dir``; each stage is skipped when its outputs exist."""

    def __init__(self, cfg: AdaptConfig, run_dir: str | Path, *, skip: tuple[str, ...] = ()):
        super().__init__(cfg, run_dir)
        self.skip = set(skip)
        unknown = self.skip - set(STAGES)
        if unknown:
            raise ConfigError(f"unknown stage(s) to skip: {sorted(unknown)}; stages: {', '.join(STAGES)}")

    def unet_path(self, method: str) -> Path:
        return self.path("unet_source.pt" if method == "source_only" else f"unet_{method}.pt")

    @property
    def candidates(self) -> list[str]:
        """The config's methods with SemI2I expanded to its seeds (``semi2i_seed<k>``) when it has several:
        what the stages train, stylize, fine-tune and map."""
        seeds = seed_methods(self.cfg.profile.semi2i.seeds)
        return [n for m in self.cfg.methods for n in (seeds if m == "semi2i" else [m])]

    @property
    def report_methods(self) -> list[str]:
        """The report's rows: the config's methods, each SemI2I seed right after the chosen ``semi2i``."""
        seeds = seed_methods(self.cfg.profile.semi2i.seeds)
        return [n for m in self.cfg.methods for n in ([m, *seeds] if m == "semi2i" and seeds != [m] else [m])]

    def reuse(self, other: str | Path) -> list[str]:
        """Link what ``other`` (a run folder of the same setting but SemI2I's) finished (:mod:`semi2i.reuse`)."""
        from semi2i.reuse import reuse_outputs

        self.run_dir.mkdir(parents=True, exist_ok=True)
        return reuse_outputs(other, self.run_dir, self.resolved_config())

    def check(self) -> None:
        """Inputs, and whatever a resumed run would skip on, checked against the config (:mod:`semi2i.preflight`)."""
        self.pull()
        check_run(self.cfg, self.run_dir)

    def not_applicable(self, method: str) -> str | None:
        return not_applicable(method, self.store("source").num_bands, self.store("target").num_bands)

    def run(self) -> dict | None:
        self.check()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_resolved_config()
        for stage in STAGES:
            if stage in self.skip:
                log.info("stage %s: skipped (--skip)", stage)
        stages = [s for s in STAGES if s not in self.skip]
        steps: list[tuple[str, Callable[[], None]]] = [("ingest", self.stage_ingest)] if "ingest" in stages else []
        lanes = adapt_lanes(self, stages)
        if lanes:  # SemI2I's chain beside the others' (semi2i.lanes)
            steps.append(("lanes", functools.partial(run_lanes, lanes, timings=self.timings, after=self.after_stage)))
        else:
            if trainings := [s for s in TRAINING_STAGES if s in stages]:  # trained together (semi2i.trainings)
                steps.append(("training", functools.partial(self.train_models, trainings)))
            steps += [(stage, getattr(self, f"stage_{stage}")) for stage in ("stylize", "finetune", "segment") if stage in stages]
        if "report" in stages:
            steps.append(("report", self.stage_report))
        self.run_stages(steps)
        return json.loads(self.path("report.json").read_text()) if self.path("report.json").exists() else None

    # 1. ingest
    def stage_ingest(self) -> None:
        cfg = self.cfg
        patch = cfg.profile.patch_size
        if cfg.synthetic is not None:
            from semi2i.demo.cities import make_demo_cities

            syn = cfg.synthetic
            files = make_demo_cities(self.path("data"), size=syn.get("size", 512), rasters_per_city=syn.get("rasters", 2),
                                     seed=syn.get("seed", 0))
            classes = str(self.path("data", "classes.json"))
            specs = {"source": CitySpec("demo_source", [str(p) for p in files["demo_source"].images],
                                        [str(p) for p in files["demo_source"].labels], classes=classes),
                     "target": CitySpec("demo_target", [str(p) for p in files["demo_target"].images],
                                        [str(p) for p in files["demo_target"].labels], classes=classes)}
        else:
            specs = {"source": cfg.source, "target": cfg.target}
        for role, spec in specs.items():
            out = self.path("stores", f"{role}.zarr")
            if out.exists():
                log.info("stage ingest: %s exists, kept", out)
                continue
            index_labels = spec.labels and not spec.palette and not spec.classes
            classes = cfg.classes if index_labels else spec.classes  # index labels without a classes file: the config's
            store = ingest_city(spec.images, out, labels=spec.labels, palette=spec.palette, classes=classes,
                                name=spec.name, nodata=spec.nodata, min_size=patch)
            if store.has_labels and store.class_names != cfg.classes:  # never kept: a re-run would skip on it
                shutil.rmtree(out, ignore_errors=True)
                raise ConfigError(f"{out}: classes {store.class_names} differ from the config's {cfg.classes}")
        source, target = self.store("source"), self.store("target")
        if source.num_bands != target.num_bands and any(m in self.cfg.methods for m in PER_BAND_METHODS):
            log.warning("source has %d bands and target %d: per-band baselines are skipped", source.num_bands, target.num_bands)

    # 2-3. the models that only need the ingested cities, trained side by side (semi2i.trainings): the U-net
    # on the real source, the ColorMapGAN and CycleGAN baselines, SemI2I (each of its seeds)
    def train_models(self, stages: list[str], scaling: Scaling | None = None, share: float = 1.0) -> None:
        """Train ``stages``' models, side by side in ``share`` of the cluster (:mod:`semi2i.trainings`)."""
        self.timings.update({stage: 0.0 for stage in stages})  # each stage's (or seed's) own time when it trains
        self.timings.update(run_trainings(self.trainings(stages), scaling or self.scaling, share))

    def trainings(self, stages: list[str]) -> list[Training]:
        """The trainings of ``stages`` whose outputs are missing, the longest first."""
        jobs: list[Training] = []
        if "semi2i" in stages and "semi2i" in self.cfg.methods:
            if self.cfg.profile.semi2i.seeds > 1:
                jobs += seed_trainings(self, fit_semi2i)
            else:
                jobs += self._gan_training("semi2i", fit_semi2i)
        for method, fit in (("cyclegan", fit_cyclegan), ("colormapgan", fit_colormapgan)):
            if method in stages:
                jobs += self._gan_training(method, fit)
        if "unet_source" in stages and not self.unet_path("source_only").exists():
            jobs.append(("unet_source", self._fit_unet_source))
        return jobs

    def stage_unet_source(self) -> None:
        run_trainings(self.trainings(["unet_source"]), self.scaling)

    def stage_colormapgan(self) -> None:
        run_trainings(self.trainings(["colormapgan"]), self.scaling)

    def stage_cyclegan(self) -> None:
        run_trainings(self.trainings(["cyclegan"]), self.scaling)

    def stage_semi2i(self) -> None:
        run_trainings(self.trainings(["semi2i"]), self.scaling)

    def _fit_unet_source(self, scaling: Scaling) -> None:
        """The source U-net, checked for a class of the source it did not learn (retrained then: semi2i.source_fit)."""
        p = self.cfg.profile
        train = functools.partial(fit_unet, p.unet, [self.store("source").path], self.run_dir, overlap=p.overlap,
                                  scaling=scaling, checkpoint_every=max(1, p.unet.train_steps // 4))
        train_checked_source_unet(self, train)

    def _gan_training(self, method: str, fit: Any) -> list[Training]:
        if method not in self.cfg.methods or self.path(f"{method}.pt").exists():
            return []
        source, target = self.store("source"), self.store("target")
        if method in PER_BAND_METHODS and source.num_bands != target.num_bands:
            log.info("stage %s: skipped, source has %d bands and target %d", method, source.num_bands, target.num_bands)
            return []
        cfg = dataclasses.replace(getattr(self.cfg.profile, method), seed=self.cfg.seed)
        return [(method, lambda scaling: fit(cfg, source.path, target.path, self.run_dir, overlap=self.cfg.profile.overlap,
                                             scaling=scaling))]

    # 4. stylize the source rasters (of ``methods``, default all: a lane's)
    def stage_stylize(self, methods: list[str] | None = None) -> None:
        from semi2i.stylize import stylize_city
        from semi2i.stylizers import load_stylizer

        source, target = self.store("source"), self.store("target")
        for method in self._stylized_methods(source, target, methods):
            out = self.path("stylized", method)
            if (out / "store.zarr").exists():
                continue
            trained = base_method(method) in GAN_METHODS
            options = {"checkpoint": self.path(f"{method}.pt"), "overlap": self.cfg.profile.overlap,
                       "device": "cuda" if self.cfg.gpu else "cpu"} if trained else {}
            if base_method(method) in ("semi2i", "cyclegan"):  # generators stylize in their training arithmetic
                options["precision"] = getattr(self.cfg.profile, base_method(method)).precision
            # built where each raster is stylized (a GPU worker with --gpu), not here
            stylizer = functools.partial(load_stylizer, base_method(method), source_stats=source.band_stats,
                                         target_stats=target.band_stats, **options)
            stylize_city(source, stylizer, out, target_dtype=target.dtype, name=f"{source.name}-{method}", overwrite=True,
                         num_gpus=1 if trained and self.cfg.gpu else 0)
        for method in self._stylized_methods(source, target, methods):
            self.tone_check(method)

    def tone_check(self, method: str) -> float | None:
        """The stylized source's tone order (:mod:`semi2i.diagnostics`), computed once and kept in
        ``stylized/<method>/checks.json``; a reversed order is logged as a warning at once, labels or not."""
        from semi2i.diagnostics import INVERTED_BELOW

        checks, store = self.path("stylized", method, "checks.json"), self.path("stylized", method, "store.zarr")
        if checks.exists():
            return json.loads(checks.read_text())["tone_order"]
        if not store.exists():
            return None
        order = round(placement.run_one(functools.partial(tone_order_of, self.store("source").path, store), stage="tone_check"), 4)
        write_text(checks, json.dumps({"tone_order": order}))
        if order < INVERTED_BELOW:
            log.warning("%s inverted the source's tones (tone order %.2f < 0: dark painted light, light painted dark); "
                        "a U-net fine-tuned on it will mislabel. Look at previews/, try another --seed or a larger "
                        "lambda_grad", method, order)
        return order

    def _stylized_methods(self, source: CityStore, target: CityStore, only: list[str] | None = None) -> list[str]:
        methods = [m for m in self.candidates if base_method(m) in STYLIZED_METHODS and (only is None or m in only)]
        if source.num_bands != target.num_bands:
            methods = [m for m in methods if m not in PER_BAND_METHODS]
        untrained = [m for m in methods if self._untrained_gan(m)]
        if untrained:  # e.g. --skip cyclegan on a fresh run folder
            log.warning("no trained %s in %s (training stage skipped?): left out", ", ".join(untrained), self.run_dir)
        return [m for m in methods if m not in untrained]

    def _untrained_gan(self, method: str) -> bool:
        """A GAN method with neither its generator nor its stylized source in the folder."""
        return (base_method(method) in GAN_METHODS and not self.path(f"{method}.pt").exists()
                and not self.path("stylized", method, "store.zarr").exists())

    # 5. fine-tune (and the target oracle)
    def stage_finetune(self, methods: list[str] | None = None, *, name: str = "finetune",
                       scaling: Scaling | None = None) -> None:
        """The fine-tunes of ``methods`` (default all) and, when they include it, the oracle, in ONE Ray Train
        run named ``name`` (a launch costs ~15 s; the demo has six)."""
        p = self.cfg.profile
        source, target = self.store("source"), self.store("target")
        jobs, stylized = [], self._stylized_methods(source, target, methods)
        for method in stylized:
            if self.unet_path(method).exists() or not prepare_fine_tune(self, method):
                continue
            init = self.unet_path("source_only") if source.num_bands == target.num_bands else None
            if init is not None and not init.exists():
                raise FileNotFoundError(f"{init}: missing: the fine-tune of {method} starts from the source U-net "
                                        "(stage unet_source)")
            jobs.append(unet_job(p.unet, [self.path("stylized", method, "store.zarr")], stage=f"finetune_{method}",
                                 output=self.unet_path(method).name, init=init, stats=None if init else target.band_stats,
                                 steps=p.unet.finetune_steps if init else p.unet.train_steps, overlap=p.overlap,
                                 seed=self.cfg.seed, checkpoint_every=max(1, p.unet.finetune_steps // 2)))
        oracle = methods is None or "target_oracle" in methods
        if oracle and "target_oracle" in self.cfg.methods and target.has_labels and not self.unet_path("target_oracle").exists():
            jobs.append(unet_job(p.unet, [target.path], stage="target_oracle", output=self.unet_path("target_oracle").name,
                                 overlap=p.overlap, seed=self.cfg.seed, checkpoint_every=max(1, p.unet.train_steps // 4)))
        fit_unets(jobs, self.run_dir, name, scaling or self.scaling)
        # before any map is drawn with them; only fine-tunes that started from the source U-net have one to fall back to
        if source.num_bands == target.num_bands:  # "off" takes no decision but undoes those of an earlier setting
            guard(self, stylized, p.unet.finetune_guard)

    def guarded_methods(self) -> list[str]:
        """The fine-tunes the do-no-harm guard decides on in this run, whichever lane it runs in (its family of tests,
        :func:`semi2i.finetune_guard.threshold`): every stylizing candidate, less a GAN that this run neither trains
        (``--skip``) nor has; none where the cities' bands differ (no fine-tune starts from the source U-net)."""
        if self.store("source").num_bands != self.store("target").num_bands:
            return []
        return [m for m in self.candidates if base_method(m) in STYLIZED_METHODS
                and not (base_method(m) in self.skip and self._untrained_gan(m))]

    def _available_methods(self) -> list[str]:
        return [m for m in self.candidates if self.unet_path(m).exists()]

    # 6. segment the target (and score where it has labels): the region-mapping job's code path, in the U-nets'
    # arithmetic (unet.precision, unet.tf32: a bf16 profile maps in bf16 too, where it pays most)
    def stage_segment(self, methods: list[str] | None = None, *, map_pieces: int | None = None) -> None:
        """Map the target with the U-nets of ``methods`` (default all) and score the maps; ``map_pieces``: how
        many CPU pieces of a mapping run at once (default: a node's CPUs each; a lane asks for its share)."""
        from semi2i.mapping import map_region

        target, unet = self.store("target"), self.cfg.profile.unet
        for method in self._available_methods():
            if methods is not None and method not in methods:
                continue
            score_path = self.path("scores", f"{method}.json")
            if score_path.exists() or self.not_applicable(method):
                continue
            out = self.path("maps", method)
            if not (out / "job.json").exists():  # an interrupted mapping resumes its finished chunks
                map_region(target.path, self.unet_path(method), out, overlap=self.cfg.profile.overlap,
                           use_ray=placement.on_cluster_now(), workers=self.cfg.workers if self.cfg.gpu else map_pieces,
                           precision=unet.precision, tf32=unet.tf32)
            result = {"method": method, "checkpoint": str(self.unet_path(method)), "maps": str(out), **score_maps(target, out)}
            write_text(score_path, json.dumps(result, indent=1))

    # 7. label-free scores (the fine-tune stage's guard scored source-only and the fine-tunes; the oracle is left for here)
    def stage_label_free(self, methods: list[str]) -> None:
        """``label_free/<method>.json`` of the report's ``methods`` not yet scored: a lane's last step, so that
        scores no fine-tune needed (the oracle's) overlap the other lane instead of delaying the report."""
        score_methods(self, [m for m in self.report_methods if m in methods])

    # 8. report (after, with several SemI2I seeds, the choice among them) with each method's label-free score and its
    # map's agreement with the colour-blind reference
    def stage_report(self) -> None:
        seeds = [m for m in seed_methods(self.cfg.profile.semi2i.seeds) if m in self._available_methods()]
        if seeds and seeds != ["semi2i"]:
            placement.run_one(functools.partial(choose, self, seeds), stage="choose_seed")
        label_free = score_methods(self, self.report_methods)  # label_free/<method>.json, labels or not
        agreement = agreements(self, self.report_methods)  # reference/agreement.json, labels or not
        report = build_report(self, self.report_methods, label_free, agreement)
        write_text(self.path("report.json"), json.dumps(report, indent=1))
        markdown = report_markdown(report)
        write_text(self.path("report.md"), markdown)
        print(markdown)
        if not self.store("target").has_labels:
            log.info("stage report: the target has no labels: label-free scores only (maps are in %s)", self.path("maps"))
            return
        from semi2i.previews import adaptation_preview

        placement.run_one(functools.partial(adaptation_preview, self, self.path("previews", "adaptation.png")), stage="previews")


def tone_order_of(source: Path, stylized: Path) -> float:
    """The tone order of the stylized store ``stylized`` against its source store (:mod:`semi2i.diagnostics`)."""
    from semi2i.diagnostics import store_tone_order

    return store_tone_order(CityStore(source), CityStore(stylized))
