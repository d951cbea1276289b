"""The multi-city pipeline: several source cities to several target cities in one run, one model for all
(``jobs/adapt_multi.py``; :mod:`semi2i.pipeline` is the two-city one).

Design: ONE shared SemI2I encoder and ONE shared decoder for every city, per-city *global* style
statistics (Algorithm 1 per city, all-reduced across Ray Train workers) and one PatchGAN with one output
channel per city (:mod:`semi2i.models.multicity`). Why not one encoder/decoder per city (the paper's
two-domain layout, N times)? In SemI2I the style of a domain *is* its embedding's μ, σ, injected by
AdaIN; the encoder/decoder pair only has to separate content from those statistics and render them
back, which does not depend on the city. Sharing them:

* parameters grow O(1) in the number of cities instead of O(N) encoders/decoders (plus N·(C+C)
  statistics and N discriminator output channels);
* every city's patches train the same encoder, so each city's content features see N times the data;
* one model serves every target: stylizing source s into target t is
  ``dec(AdaIN(enc(x_s), μ_t, σ_t), low_s)``, so a new (source, target) pair costs no new network.

The price: one decoder must render every city, so all cities need the same band count (checked
before any work: a one-line :class:`ConfigError`). Mixed band counts need the two-domain pipeline.
Training: :mod:`semi2i.training.multicity_step` (a step), :func:`semi2i.training.distributed.fit_multicity`.

Stages of :class:`MultiCityRun` (each resumable, skipped when its outputs exist)::

    ingest -> unet_source (one per source) -> multicity (multicity.pt) -> stylize (every s != t pair)
    -> finetune (the source's U-net on the stylized source) -> segment (+ score) -> report

Run folder: ``stores/<city>.zarr``, ``unet_source_<city>.pt``, ``multicity.pt``,
``stylized/<s>_to_<t>/``, ``unet_<s>_to_<t>.pt``, ``maps/<method>/<s>_to_<t>/``,
``scores/<s>_to_<t>/<method>.json``, ``report.json``, ``report.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from semi2i import placement
from semi2i.checkpoints import MULTICITY_CHECKPOINT
from semi2i.config import ConfigError, Profile
from semi2i.adapt_config import (DEMO_CLASSES, CityFile, CitySpec, RunFile, city_spec, config_profile, file_lines,
                                  read_config_file, shape)
from semi2i.schema import Str, settings, validate
from semi2i.locations import write_text
from semi2i.pipeline import RunFolder, score_maps
from semi2i.report_table import pct
from semi2i.stylizers.multicity import MultiCityStylizer, load_multicity
from semi2i.training.distributed import fit_multicity, fit_unets, unet_job

log = logging.getLogger(__name__)

METHOD = MultiCityStylizer.name
REPORT_METHODS = ("source_only", METHOD)
STAGES = ("ingest", "unet_source", "multicity", "stylize", "finetune", "segment", "report")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class MultiCityConfig:
    name: str
    cities: dict  # name -> CitySpec (empty for the synthetic demo until ingest writes it)
    sources: list[str]
    targets: list[str]
    classes: list[str]
    profile: Profile
    seed: int = 0
    workers: int = 1
    gpu: bool = False
    data_plane: str = "auto"
    synthetic: dict | None = None
    raw: dict = field(default_factory=dict)

    @property
    def city_names(self) -> list[str]:
        """Every city the model trains on: sources and targets, in first-mention order."""
        return list(dict.fromkeys([*self.sources, *self.targets]))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(s, t) for s in self.sources for t in self.targets if s != t]


CityNames = Annotated[list[Str], shape(lambda v: isinstance(v, list) and bool(v) and all(isinstance(c, str) for c in v),
                                       "must be a non-empty list of city names")]


@settings
class MultiCityFile(RunFile):
    """A multi-city config file: named cities, which of them are sources and which targets."""

    cities: dict[Str, CityFile] | None = None
    sources: CityNames | None = None
    targets: CityNames | None = None


def load_multicity_config(path: str | Path | None, *, profile: str | None = None, seed: int | None = None,
                          workers: int | None = None, gpu: bool | None = None) -> MultiCityConfig:
    """Read and validate a multi-city YAML config (``None``: the built-in 3-city synthetic demo).

    Every problem (unknown keys or city names, missing files, unequal band counts) is a
    :class:`ConfigError` raised before any work starts.
    """
    if path is None:
        data, origin = {"name": "multicity_demo", "synthetic": {}}, "<built-in multi-city demo>"
    else:
        data, origin = read_config_file(path), str(path)
        data.setdefault("name", Path(path).stem)
    raw = dict(data)
    data = {**data, **{k: v for k, v in (("seed", seed), ("workers", workers), ("gpu", gpu)) if v is not None}}
    if profile is not None:
        data["profile"] = profile
    checked, errors = validate(MultiCityFile, data, **file_lines(origin))
    prof = config_profile(data, origin, errors)
    if checked is None:  # the city names are checked on the file as written, so they are reported with the rest
        raise ConfigError("\n".join(errors + _raw_name_errors(data, origin)))
    cities: dict = {}
    if checked.synthetic is not None:
        from semi2i.demo.cities import MULTICITY_DEMO

        if checked.cities is not None:
            errors.append(f"{origin}: 'cities' and 'synthetic' exclude each other")
        known = [c for c, _ in MULTICITY_DEMO]
    else:
        if checked.cities is None or len(checked.cities) < 2:
            errors.append(f"{origin}: 'cities' must map at least two city names to {{images, labels, palette|classes}}")
        known = list(checked.cities or {})
        if checked.classes is None:
            errors.append(f"{origin}: 'classes' must be a non-empty list of class names")
    sources = checked.sources if checked.sources is not None else known if checked.synthetic is not None else None
    targets = checked.targets if checked.targets is not None else known if checked.synthetic is not None else None
    for key, value in (("sources", sources), ("targets", targets)):
        if value is None:
            errors.append(f"{origin}: '{key}' must be a non-empty list of city names")
        for name in value or []:
            if name not in known:
                errors.append(f"{origin}: unknown city '{name}' in {key} (cities: {', '.join(known) or 'none'})")
    sources, targets = sources or [], targets or []
    if sources and targets and not any(s != t for s in sources for t in targets):
        errors.append(f"{origin}: no (source, target) pair of different cities")
    for name, spec in (checked.cities or {}).items() if checked.synthetic is None else ():
        if not _NAME.match(name):
            errors.append(f"{origin}: city name '{name}' must be letters, digits, '_', '.', '-' (it names files)")
        if name in sources and spec.labels is None:
            errors.append(f"{origin}: 'cities.{name}.labels' is required (the source's labels train the U-net)")
        cities[name] = dataclasses.replace(city_spec(spec, f"cities.{name}", origin, errors), name=name)
    if not errors and cities:
        used = list(dict.fromkeys([*sources, *targets]))
        bands = _band_counts({c: cities[c] for c in used}, origin, errors)
        if not errors and len(set(bands.values())) > 1:
            shown = ", ".join(f"{c}: {n}" for c, n in bands.items())
            errors.append(f"{origin}: cities have different band counts ({shown}); the multi-city model shares one "
                          "encoder/decoder and needs equal band counts (use jobs/adapt.py per pair instead)")
    if prof is not None and prof.semi2i.target_class_prior is not None:
        errors.append(f"{origin}: semi2i.target_class_prior: one target's class proportions; the multi-city model "
                      "trains every city pair (use jobs/adapt.py per pair instead)")
    if errors:
        raise ConfigError("\n".join(errors))
    return MultiCityConfig(name=checked.name, cities=cities, sources=list(sources), targets=list(targets),
                           classes=list(checked.classes or DEMO_CLASSES), profile=prof, seed=checked.seed,
                           workers=checked.workers, gpu=checked.gpu, data_plane=checked.data_plane,
                           synthetic=data.get("synthetic"), raw=raw)


def _raw_name_errors(data: dict, origin: str) -> list[str]:
    """The sources/targets that name no city and the city names that cannot name files, from the file as
    written (for a file the schema refused: its other problems are reported together with these)."""
    cities = data.get("cities") if isinstance(data.get("cities"), dict) else {}
    if data.get("synthetic") is not None:
        from semi2i.demo.cities import MULTICITY_DEMO

        cities = {c: None for c, _ in MULTICITY_DEMO}
    errors = [f"{origin}: city name '{name}' must be letters, digits, '_', '.', '-' (it names files)"
              for name in cities if data.get("synthetic") is None and not _NAME.match(str(name))]
    for key in ("sources", "targets"):
        names = data.get(key)
        for name in names if isinstance(names, list) else []:
            if name not in cities:
                errors.append(f"{origin}: unknown city '{name}' in {key} (cities: {', '.join(map(str, cities)) or 'none'})")
    return errors


def _band_counts(cities: dict, origin: str, errors: list[str]) -> dict[str, int]:
    """Each city's band count, from the header of its first image."""
    import rasterio

    from semi2i import io_paths

    bands = {}
    for name, city in cities.items():
        try:
            first = io_paths.expand(city.images)[0]
            with rasterio.open(io_paths.gdal_path(first)) as src:
                bands[name] = src.count
        except (FileNotFoundError, IndexError) as exc:
            errors.append(f"{origin}: 'cities.{name}.images': {exc or 'no images'}")
        except Exception as exc:  # unreadable raster
            errors.append(f"{origin}: 'cities.{name}.images': cannot read ({exc})")
    return bands


# ---------------------------------------------------------------------------------------------------
# the run


class MultiCityRun(RunFolder):
    """The stages of one multi-city adaptation in ``run_dir``; each is skipped when its outputs exist."""

    cfg: MultiCityConfig

    @staticmethod
    def pair_key(source: str, target: str) -> str:
        return f"{source}_to_{target}"

    def unet_path(self, method: str, source: str, target: str) -> Path:
        return self.path(f"unet_source_{source}.pt" if method == "source_only" else f"unet_{self.pair_key(source, target)}.pt")

    def run(self) -> dict | None:
        self.pull()  # a run folder on object storage: its published outputs (what the stages skip on)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_resolved_config()
        self.run_stages([(stage, getattr(self, f"stage_{stage}")) for stage in STAGES])
        report = self.path("report.json")
        return json.loads(report.read_text()) if report.exists() else None

    def stage_ingest(self) -> None:
        from semi2i.data.ingest import ingest_city

        cfg = self.cfg
        specs = dict(cfg.cities)
        if cfg.synthetic is not None:
            from semi2i.demo.cities import make_multicity_demo

            syn = cfg.synthetic
            files = make_multicity_demo(self.path("data"), size=syn.get("size", 512), rasters_per_city=syn.get("rasters", 2),
                                        seed=syn.get("seed", 0))
            classes = str(self.path("data", "classes.json"))
            specs = {c: CitySpec(c, [str(p) for p in f.images], [str(p) for p in f.labels], classes=classes)
                     for c, f in files.items()}
        for city in cfg.city_names:
            out = self.path("stores", f"{city}.zarr")
            if out.exists():
                continue
            spec = specs[city]
            log.info("stage ingest: %s", city)
            store = ingest_city(spec.images, out, labels=spec.labels, palette=spec.palette, classes=spec.classes, name=city,
                                nodata=spec.nodata, min_size=cfg.profile.patch_size)
            if store.has_labels and store.class_names != cfg.classes:
                raise ConfigError(f"{out}: classes {store.class_names} differ from the config's {cfg.classes}")
        bands = {c: self.store(c).num_bands for c in cfg.city_names}
        if len(set(bands.values())) > 1:
            raise ConfigError(f"cities have different band counts {bands}; the multi-city model needs equal band counts")

    def stage_unet_source(self) -> None:
        p = self.cfg.profile
        jobs = [unet_job(p.unet, [self.store(source).path], stage=f"unet_source_{source}",
                         output=self.unet_path("source_only", source, "").name, overlap=p.overlap, seed=self.cfg.seed,
                         checkpoint_every=max(1, p.unet.train_steps // 4))
                for source in self.cfg.sources if not self.unet_path("source_only", source, "").exists()]
        if jobs:
            log.info("stage unet_source: %s", ", ".join(j["stage"] for j in jobs))
            fit_unets(jobs, self.run_dir, "unet_source", self.scaling)

    def stage_multicity(self) -> None:
        if self.path(MULTICITY_CHECKPOINT).exists():
            return
        cfg = dataclasses.replace(self.cfg.profile.semi2i, seed=self.cfg.seed)
        log.info("stage multicity: one shared generator for %s", ", ".join(self.cfg.city_names))
        fit_multicity(cfg, {c: self.store(c).path for c in self.cfg.city_names}, self.run_dir,
                      overlap=self.cfg.profile.overlap, scaling=self.scaling)

    def stage_stylize(self) -> None:
        from semi2i.stylize import stylize_city

        todo = [(s, t) for s, t in self.cfg.pairs if not self.path("stylized", self.pair_key(s, t), "store.zarr").exists()]
        if not todo:
            return
        generator, style, cities, cfg = load_multicity(self.path(MULTICITY_CHECKPOINT))
        for source, target in todo:
            src, tgt = self.store(source), self.store(target)
            log.info("stage stylize: %s -> %s", source, target)
            stylizer = MultiCityStylizer(generator, style, cities, source, target, src.band_stats, tgt.band_stats,
                                         tile_size=cfg.patch_size, overlap=self.cfg.profile.overlap)
            stylize_city(src, stylizer, self.path("stylized", self.pair_key(source, target)), target_dtype=tgt.dtype,
                         name=f"{source}-{METHOD}-{target}", overwrite=True)

    def stage_finetune(self) -> None:
        p = self.cfg.profile
        jobs = [unet_job(p.unet, [self.path("stylized", self.pair_key(s, t), "store.zarr")],
                         stage=f"finetune_{self.pair_key(s, t)}", output=self.unet_path(METHOD, s, t).name,
                         init=self.unet_path("source_only", s, t), steps=p.unet.finetune_steps, overlap=p.overlap,
                         seed=self.cfg.seed, checkpoint_every=max(1, p.unet.finetune_steps // 2))
                for s, t in self.cfg.pairs if not self.unet_path(METHOD, s, t).exists()]
        if p.unet.finetune_guard != "off":
            log.warning("unet.finetune_guard: %s is applied by jobs/adapt.py only; these fine-tunes map as trained",
                        p.unet.finetune_guard)
        if jobs:  # each source's U-net fine-tuned on its stylized copy for each target, one Ray Train run
            log.info("stage finetune: %s", ", ".join(j["stage"] for j in jobs))
            fit_unets(jobs, self.run_dir, "finetune", self.scaling)

    def stage_segment(self) -> None:
        from semi2i.mapping import map_region

        for source, target in self.cfg.pairs:
            tgt = self.store(target)
            for method in REPORT_METHODS:
                key = self.pair_key(source, target)
                score_path = self.path("scores", key, f"{method}.json")
                if score_path.exists() or not self.unet_path(method, source, target).exists():
                    continue
                out = self.path("maps", method, key)
                if not (out / "job.json").exists():
                    log.info("stage segment: %s with %s's %s U-net", target, source, method)
                    map_region(tgt.path, self.unet_path(method, source, target), out, overlap=self.cfg.profile.overlap,
                               use_ray=placement.on_cluster_now(), workers=self.cfg.workers if self.cfg.gpu else None)
                result = {"source": source, "target": target, "method": method,
                          "checkpoint": str(self.unet_path(method, source, target)), "maps": str(out), **score_maps(tgt, out)}
                write_text(score_path, json.dumps(result, indent=1))

    def stage_report(self) -> None:
        pairs = {}
        for source, target in self.cfg.pairs:
            methods = {}
            for method in REPORT_METHODS:
                path = self.path("scores", self.pair_key(source, target), f"{method}.json")
                if path.exists():
                    score = json.loads(path.read_text())
                    if "miou" in score:
                        methods[method] = {"iou": score["iou"], "miou": score["miou"], "pixel_accuracy": score["pixel_accuracy"]}
            entry = {"source": source, "target": target, "methods": methods}
            if not methods:
                entry["note"] = "target has no labels: maps only"
            pairs[f"{source}->{target}"] = entry
        report = {"cities": self.cfg.city_names, "sources": self.cfg.sources, "targets": self.cfg.targets,
                  "classes": self.cfg.classes, "profile": self.cfg.profile.name, "model": MULTICITY_CHECKPOINT,
                  "pairs": pairs, "seed": self.cfg.seed, "config": self.cfg.name}
        write_text(self.path("report.json"), json.dumps(report, indent=1))
        markdown = report_markdown(report)
        write_text(self.path("report.md"), markdown)
        print(markdown)


def report_markdown(report: dict) -> str:
    classes = report["classes"]
    lines = [f"# Multi-city adaptation: {', '.join(report['cities'])} ({report['profile']} profile, seed {report.get('seed', 0)})",
             "", "One shared SemI2I generator (multicity.pt) for every target; IoU in percent on each target's labels.", "",
             "| source | target | method | " + " | ".join(classes) + " | mIoU | pixel acc. |",
             "|---" * (len(classes) + 5) + "|"]
    for entry in report["pairs"].values():
        for name, m in entry["methods"].items():
            cells = [pct(m["iou"].get(c)) for c in classes]
            lines.append(f"| {entry['source']} | {entry['target']} | {name} | " + " | ".join(cells)
                         + f" | **{pct(m['miou'])}** | {pct(m['pixel_accuracy'])} |")
        if not entry["methods"]:
            lines.append(f"| {entry['source']} | {entry['target']} | (no labels) |" + " |" * (len(classes) + 2))
    return "\n".join(lines) + "\n"
