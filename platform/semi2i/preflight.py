"""What jobs/adapt.py checks before Ray starts, and again whenever a run resumes.

A fresh run: every glob matches, images pair with labels, headers agree (sizes, bands, CRS), and the
class list of each palette/classes file is the config's. A resumed run: whatever a stage would skip on
(the ingested stores, the trained U-nets and GANs) still matches the config: same classes, same band
counts, ingested from the same files, unchanged since; SemI2I generators and U-nets trained with the same settings.
So no run trains on settings refused once, nor resumes on a model of other settings.

Which methods apply to a source/target pair (:func:`not_applicable`) lives here too: with different
band counts the per-band baselines cannot run, and the source-only U-net cannot read the target.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from semi2i.config import ConfigError
from semi2i.data import ingest_inputs
from semi2i.data.ingest_inputs import IngestError
from semi2i.data.palette import Palette, PaletteError
from semi2i.data.store import CityStore, StoreError

log = logging.getLogger(__name__)

#: stylizers that map each band onto itself (= pipeline.PER_BAND_METHODS; kept here to avoid a cycle)
PER_BAND = ("histogram_matching", "gray_world", "colormapgan")


def not_applicable(method: str, source_bands: int, target_bands: int) -> str | None:
    """Why ``method`` cannot be applied to this pair, or None when it can."""
    if source_bands == target_bands:
        return None
    if method == "source_only":
        return (f"the source-only U-net reads the source's {source_bands} band(s); the target has {target_bands} "
                "(no model trained on the source alone can map it)")
    if method in PER_BAND:
        return f"maps each band onto itself, but the source has {source_bands} band(s) and the target {target_bands}"
    return None


def check_run(cfg: Any, run_dir: str | Path) -> None:
    """Raise ConfigError/IngestError (one line, naming the file) for anything wrong before any work."""
    run_dir = Path(run_dir)
    stores_dir = run_dir / "stores"
    pairs = {}
    if cfg.synthetic is None:  # the config's own files first: globs, class files, headers of a fresh city
        for role in ("source", "target"):
            fresh = not (stores_dir / f"{role}.zarr").exists()
            pairs[role] = _check_city_files(role, getattr(cfg, role), cfg, fresh=fresh)
    stores = {}
    for role in ("source", "target"):  # then what a resume skips on: the stores ...
        path = stores_dir / f"{role}.zarr"
        if path.exists():
            stores[role] = _open(path)
            _check_store_classes(stores[role], cfg.classes)
            if role in pairs:
                _check_store_provenance(stores[role], role, pairs[role])
    _check_checkpoints(cfg, run_dir, stores)  # ... and the trained models


def city_class_names(spec: Any) -> tuple[str, list[str]] | None:
    """(file, class names) of a city's palette or classes file, or None when it has neither."""
    if spec.palette:
        try:
            return spec.palette, list(Palette.load(spec.palette).class_names)
        except PaletteError as exc:
            raise IngestError(str(exc)) from None
    if spec.classes:
        return spec.classes, ingest_inputs.load_class_names(spec.classes)
    return None


def _check_city_files(role: str, spec: Any, cfg: Any, *, fresh: bool) -> list[tuple[Path, Path | None]]:
    images = ingest_inputs.expand_paths(spec.images, f"{role} image")
    labels = ingest_inputs.expand_paths(spec.labels, f"{role} label") if spec.labels else []
    pairs = ingest_inputs.pair_images_labels(images, labels)
    named = city_class_names(spec) if labels else None
    if named is not None and named[1] != list(cfg.classes):
        raise ConfigError(f"{named[0]}: classes {named[1]} differ from the config's classes {list(cfg.classes)} "
                          f"(same names in the same order, or the labels would be read as other classes)")
    if fresh:  # headers only: sizes, band counts, dtypes, CRS/transform of labels, patch size
        pal = Palette.load(spec.palette) if spec.palette and labels else None
        sources = [ingest_inputs.inspect_raster(img, lbl, pal, spec.nodata) for img, lbl in pairs]
        ingest_inputs.check_city(sources, cfg.profile.patch_size)
    return pairs


def _open(path: Path) -> CityStore:
    try:
        return CityStore(path)
    except StoreError as exc:
        raise ConfigError(f"{exc}; delete it (the ingest stage rewrites it) or use another --run-dir") from None


def _check_store_classes(store: CityStore, classes: list[str]) -> None:
    if store.has_labels and store.class_names != list(classes):
        raise ConfigError(f"{store.path}: ingested with classes {store.class_names}, but the config says {list(classes)}; "
                          "delete the run folder (or use another --run-dir) to start over")


def _check_store_provenance(store: CityStore, role: str, pairs: list[tuple[Path, Path | None]]) -> None:
    """The kept store was ingested from exactly the config's files, and they have not changed since."""
    store_path = store.path
    prov = store.meta.get("provenance", {})
    wanted_images = [str(img.resolve()) for img, _ in pairs]  # as ingest records them
    wanted_labels = [None if lbl is None else str(lbl.resolve()) for _, lbl in pairs]
    hint = "; delete it (the ingest stage rewrites it) or use another --run-dir"
    if prov.get("images") is not None and list(prov["images"]) != wanted_images:
        raise ConfigError(f"{store_path}: ingested from other images than the config's {role}.images{hint}")
    if prov.get("labels") is not None and list(prov["labels"]) != wanted_labels:
        raise ConfigError(f"{store_path}: ingested from other labels than the config's {role}.labels{hint}")
    for entry in prov.get("files", []):  # recorded since issue 20
        p = Path(entry["path"])
        try:
            st = p.stat()
        except OSError:
            raise ConfigError(f"{p}: ingested into {store_path} but no longer readable{hint}") from None
        if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]) and not _same_bytes(p, st.st_size, entry):
            raise ConfigError(f"{p}: changed since it was ingested into {store_path}{hint}")


def _same_bytes(path: Path, size: int, entry: dict) -> bool:
    """A file with a new mtime but the size and SHA-256 recorded at ingest (stores since 2026-12-03) is the same
    file copied again, not an edited one."""
    from semi2i.data.ingest import file_sha256

    return "sha256" in entry and size == entry["size"] and file_sha256(path) == entry["sha256"]


def _check_checkpoints(cfg: Any, run_dir: Path, stores: dict[str, CityStore]) -> None:
    """Trained models the stages would skip on must fit the config and the stores."""
    from semi2i.checkpoints import load_checkpoint

    hint = "; delete it (its stage retrains it) or use another --run-dir"
    source, target = stores.get("source"), stores.get("target")
    for path in sorted(run_dir.glob("unet_*.pt")):
        state = _load(path, load_checkpoint)
        if list(state.get("class_names", cfg.classes)) != list(cfg.classes):
            raise ConfigError(f"{path}: trained on classes {list(state['class_names'])}, but the config says "
                              f"{list(cfg.classes)}{hint}")
        expected = None
        if path.name == "unet_source.pt" and source is not None:
            expected = source.num_bands
        elif path.name == "unet_target_oracle.pt" and target is not None:
            expected = target.num_bands
        if expected is not None and int(state.get("in_bands", expected)) != expected:
            raise ConfigError(f"{path}: takes {state['in_bands']} band(s), but the store it was trained on now has "
                              f"{expected}{hint}")
        if isinstance(state.get("unet"), dict):
            _check_unet_settings(path, state["unet"], cfg.profile.unet)
    if source is None or target is None:
        return
    semi2i = sorted(run_dir.glob("semi2i*.pt"))  # semi2i.pt and semi2i_seed<k>.pt
    for path in semi2i + [p for p in (run_dir / "cyclegan.pt", run_dir / "colormapgan.pt") if p.exists()]:
        config = _load(path, load_checkpoint).get("config") or {}
        bands = (config.get("in_bands_a"), config.get("in_bands_b"))
        if None not in bands and bands != (source.num_bands, target.num_bands):
            raise ConfigError(f"{path}: trained for {bands[0]} -> {bands[1]} bands, but the stores have "
                              f"{source.num_bands} -> {target.num_bands}{hint}")
        if path in semi2i:
            _check_semi2i_settings(path, config, cfg.profile.semi2i, run_dir)


def _settings_that_differ(stored: dict, current: Any, ignored: set[str]) -> list[str]:
    """``"name: stored there, current now"`` for each field of the ``current`` settings dataclass outside
    ``ignored`` that the checkpoint's ``stored`` settings hold otherwise (a key an older checkpoint lacks counts
    as the field's default)."""
    return [f"{f.name}: {stored.get(f.name, f.default)!r} there, {getattr(current, f.name)!r} now"
            for f in dataclasses.fields(current) if f.name not in ignored
            and stored.get(f.name, f.default) != getattr(current, f.name)]


#: SemI2I settings that do not change the trained generator (or are set per run and per seed). The arithmetic
#: (precision, tf32, compile) is among them: weights and statistics are fp32 in either, so a run resumes in either (README).
_BOOKKEEPING = {"in_bands_a", "in_bands_b", "seed", "seeds", "checkpoint_every", "preview_every", "log_every",
                "precision", "tf32", "compile"}


def _check_semi2i_settings(path: Path, stored: dict, current: Any, run_dir: Path) -> None:
    """A generator trained with other SemI2I settings (e.g. a profile's default changed since) would be
    resumed on silently, with everything stylized, fine-tuned and mapped from it: refuse instead."""
    differs = _settings_that_differ(stored, current, _BOOKKEEPING)
    if differs:
        raise ConfigError(f"{path}: trained with other SemI2I settings ({'; '.join(differs)}); a resumed run would "
                          f"reuse it and what was made from it: use another --run-dir (--reuse-from {run_dir} "
                          "keeps what does not depend on SemI2I)")


#: U-net settings that do not change the trained weights' meaning: the arithmetic, the memory layout, the
#: fine-tune guard (a decision after training, which carries itself over to a changed setting: semi2i.finetune_guard),
#: the source U-net's retrains (a choice among trainings of these settings; source_fit.json records it) and the
#: colour-blind reference's steps (its own U-net, checked by semi2i.colour_blind).
_UNET_BOOKKEEPING = {"precision", "tf32", "channels_last", "finetune_guard", "source_retrains", "reference_steps"}
#: ... and those a U-net trained from scratch (the source U-net, the oracle) never used.
_FINETUNE_ONLY = {"finetune_steps", "finetune_lr_schedule"}
_FROM_SCRATCH = {"unet_source.pt", "unet_target_oracle.pt"}


def _check_unet_settings(path: Path, stored: dict, current: Any) -> None:
    """A U-net trained with other settings (a changed budget, rate or schedule, e.g. a profile's default since)
    would be skipped on by its stage and mapped as if it were this config's: refuse instead."""
    ignored = _UNET_BOOKKEEPING | (_FINETUNE_ONLY if path.name in _FROM_SCRATCH else set())
    differs = _settings_that_differ(stored, current, ignored)
    if differs:
        raise ConfigError(f"{path}: trained with other U-net settings ({'; '.join(differs)}); a resumed run would "
                          "reuse it and what was made from it: use another --run-dir")


def _load(path: Path, load: Any) -> dict:
    try:
        state = load(path)
    except Exception as exc:  # noqa: BLE001 - a truncated file (killed while saving before atomic saves)
        raise ConfigError(f"{path}: cannot read this checkpoint ({type(exc).__name__}); delete it (its stage "
                          "retrains it)") from None
    return state if isinstance(state, dict) else {}
