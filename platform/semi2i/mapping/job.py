"""Map a region: plan chunks, run them (in process or on a Ray Data actor pool), then publish outputs.

Layout of ``out``::

    out/.partial/               work in progress (resumable): job.json, input.zarr (ingested rasters),
                                maps.zarr (chunks being written), done/<raster>/<row>_<col>.done
    out/maps.zarr               class maps (+ probabilities, stylized) per raster, chunk-aligned
    out/cog/<raster>.tif        Cloud-Optimized GeoTIFF of the class map (input CRS/transform, nodata 255)
    out/cog/<raster>_stylized.tif
    out/quicklook/<raster>.png
    out/job.json                written last: its presence marks the job complete

Raster inputs are ingested into ``.partial/input.zarr`` (pixels are read from zarr in the tasks) and that
copy is dropped once the job is complete.

A re-run with the same job settings skips finished chunks; other settings are refused (``overwrite``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import zarr

from semi2i.data.ingest import ingest_city
from semi2i.data.store import CityStore, StoreError
from semi2i.training.semi2i_step import load_checkpoint

from .output import create_outputs, write_cog, write_quicklook
from .windows import Chunk, plan_chunks
from .worker import NODATA_CLASS, ChunkMapper, RayChunkMapper

log = logging.getLogger(__name__)


class MappingError(ValueError):
    """Bad input to a mapping job (one line, names the file)."""


def _input_paths(spec: str | Path | list) -> tuple[Path | None, list[str]]:
    """(store, []) for one city store, else (None, raster paths) with globs expanded; checked to exist."""
    from semi2i import io_paths

    specs = [str(s) for s in (spec if isinstance(spec, (list, tuple)) else [spec])]
    if any(io_paths.is_url(s) for s in specs):  # object-store rasters: listed by fsspec, read by GDAL at ingest
        try:
            return None, io_paths.expand(specs)
        except (FileNotFoundError, RuntimeError) as exc:
            raise MappingError(f"{specs[0]}: {exc}") from None
    if len(specs) == 1 and (Path(specs[0]) / "zarr.json").exists():
        try:
            CityStore(specs[0])
        except StoreError as exc:
            raise MappingError(str(exc)) from None
        return Path(specs[0]), []
    paths = [p for s in specs for p in (sorted(glob.glob(s)) if glob.has_magic(s) else [s])]
    if not paths:
        raise MappingError(f"{specs[0]}: no raster matches")
    for p in paths:
        if not Path(p).is_file():
            raise MappingError(f"{p}: input raster not found")
    return None, paths


def resolve_input(spec: str | Path | list, work: Path) -> Path:
    """A city store path as is; raster paths/globs are ingested (once) into ``work/input.zarr``."""
    store, paths = _input_paths(spec)
    if store is not None:
        return store
    store = work / "input.zarr"
    if not store.exists():  # ingest_city publishes atomically: an existing store is complete
        ingest_city(paths, store, name="region", min_size=1, progress=False)
    return store


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _store_stamp(store: Path) -> str:
    return hashlib.sha1((store / "zarr.json").read_bytes()).hexdigest()


def map_region(
    input: str | Path | list,
    checkpoint: str | Path,
    out: str | Path,
    *,
    chunk_size: int = 1024,
    overlap: int = 32,
    batch_tiles: int = 8,
    probabilities: bool = False,
    stylize: dict | None = None,
    workers: int | None = None,
    use_ray: bool = False,
    device: str | None = None,
    cog: bool = True,
    quicklook: bool = True,
    overwrite: bool = False,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> dict:
    """Map every raster of ``input`` with the U-net ``checkpoint`` into ``out``; returns the job summary.

    ``stylize``: ``{"checkpoint": semi2i.pt, "source": "a"|"b", "source_stats": BandStats attrs,
    "target_stats": ..., "in_bands", "out_bands", "dtype": output dtype[, "overlap"]}`` runs SemI2I before the U-net (the stylized imagery is
    written too). ``on_chunk`` is called after each finished chunk on the in-process path (progress, tests).
    """
    out = Path(out)
    checkpoint = Path(checkpoint)
    if stylize is not None:
        stylize = {"overlap": overlap, **stylize}
    if not checkpoint.is_file():
        raise MappingError(f"{checkpoint}: U-net checkpoint not found")
    if stylize and not Path(stylize["checkpoint"]).is_file():
        raise MappingError(f"{stylize['checkpoint']}: SemI2I checkpoint not found")
    _input_paths(input)  # bad input fails before anything is written
    if (out / "job.json").exists():
        if not overwrite:
            raise MappingError(f"{out}: already mapped (job.json exists; --overwrite redoes it)")
        for name in ("maps.zarr", "cog", "quicklook", "job.json", ".partial"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    work = out / ".partial"
    work.mkdir(parents=True, exist_ok=True)
    store_path = resolve_input(input, work)
    store = CityStore(store_path)
    state = load_checkpoint(checkpoint)
    in_bands = stylize["in_bands"] if stylize else int(state["in_bands"])
    if stylize and stylize.get("out_bands") not in (None, int(state["in_bands"])):
        raise MappingError(f"{stylize['checkpoint']}: stylizes to {stylize['out_bands']} bands, "
                           f"{checkpoint} expects {state['in_bands']}")
    if store.num_bands != in_bands:
        raise MappingError(f"{store.path}: {store.num_bands} bands, but {checkpoint if not stylize else stylize['checkpoint']} "
                           f"expects {in_bands}")
    class_names = list(state["class_names"])

    settings = {
        "checkpoint": _fingerprint(checkpoint), "store": str(store_path.resolve()), "store_stamp": _store_stamp(store_path),
        "chunk_size": chunk_size, "overlap": overlap, "probabilities": probabilities,
        "stylize": None if not stylize else {**stylize, "fingerprint": _fingerprint(Path(stylize["checkpoint"]))},
    }
    job_file = work / "job.json"
    zarr_path = work / "maps.zarr"
    if job_file.exists() and json.loads(job_file.read_text()) != json.loads(json.dumps(settings)):
        if not overwrite:
            raise MappingError(f"{out}: an unfinished job with other settings is there (--overwrite restarts it)")
        shutil.rmtree(zarr_path, ignore_errors=True)
        shutil.rmtree(work / "done", ignore_errors=True)
        job_file.unlink()
    if job_file.exists() and not zarr_path.exists() and (out / "maps.zarr").exists():
        os.replace(out / "maps.zarr", zarr_path)  # killed while publishing: take the published zarr back
    if not job_file.exists() or not zarr_path.exists():
        shutil.rmtree(zarr_path, ignore_errors=True)
        shutil.rmtree(work / "done", ignore_errors=True)
        sty_out = (stylize["out_bands"], stylize["dtype"], store.nodata) if stylize else None
        create_outputs(zarr_path, store.rasters, chunk_size, class_names=class_names,
                       probabilities=probabilities, stylized=sty_out)
        tmp = job_file.with_name(".job.json.tmp")
        tmp.write_text(json.dumps(settings, indent=1))
        os.replace(tmp, job_file)

    job = {"checkpoint": str(checkpoint), "store": str(store_path), "zarr": str(zarr_path), "done_dir": str(work / "done"),
           "overlap": overlap, "batch_tiles": batch_tiles, "probabilities": probabilities, "stylize": stylize,
           "device": device}
    chunks = [c for info in store.rasters for c in plan_chunks(info.id, info.height, info.width, chunk_size)]
    done_dir = work / "done"
    todo = [c for c in chunks if not (done_dir / c.raster / f"{c.row}_{c.col}.done").exists()]
    total_mpx = sum(c.pixels for c in chunks) / 1e6
    log.info("map %s: %d rasters, %.1f Mpx, %d chunks of %d px (%d to do) with %s",
             store.name, len(store.rasters), total_mpx, len(chunks), chunk_size, len(todo), checkpoint.name)

    started = time.perf_counter()
    if todo:
        if use_ray:
            mpx = _run_ray(job, todo, workers)
        else:
            mpx = _run_local(job, todo, on_chunk)
        elapsed = time.perf_counter() - started
        log.info("mapped %.1f Mpx in %.1fs: %.2f Mpx/s", mpx, elapsed, mpx / max(elapsed, 1e-9))
    else:
        mpx, elapsed = 0.0, 0.0
    return _publish(out, work, store, class_names, settings, stylize, cog, quicklook,
                    {"mpx": total_mpx, "computed_mpx": mpx, "seconds": elapsed, "chunks": len(chunks),
                     "computed_chunks": len(todo)})


def _run_local(job: dict, todo: list[Chunk], on_chunk: Callable[[Chunk], None] | None) -> float:
    mapper = ChunkMapper(job)
    mpx, t0, last = 0.0, time.perf_counter(), time.perf_counter()
    for i, chunk in enumerate(todo):
        mpx += mapper.run(chunk) / 1e6
        if on_chunk is not None:
            on_chunk(chunk)
        if time.perf_counter() - last > 10 or i + 1 == len(todo):
            last = time.perf_counter()
            log.info("chunks %d/%d, %.2f Mpx/s", i + 1, len(todo), mpx / max(last - t0, 1e-9))
    return mpx


def _run_ray(job: dict, todo: list[Chunk], workers: int | None) -> float:
    """Chunk descriptors -> Ray Data -> ``map_batches`` actor pool (GPU actors when GPUs exist)."""
    import ray

    if not ray.is_initialized():  # joins the cluster of RAY_ADDRESS / `ray job submit`, else a local Ray
        ray.init(include_dashboard=False, log_to_driver=os.environ.get("SEMI2I_WORKER_LOGS", "1") == "1")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    # more actors than devices share them (fractional resources) rather than wait for ones that never come
    if gpus:
        size = workers or gpus
        per_actor, threads = {"num_gpus": min(1.0, gpus / size)}, None
        job = {**job, "device": "cuda"}
    else:
        size = workers or max(1, cpus)
        per_actor, threads = {"num_cpus": min(1.0, cpus / size) if size > cpus else cpus // size}, max(1, cpus // size)
    ds = ray.data.from_items([c.to_item() for c in todo], override_num_blocks=max(1, min(len(todo), 4 * size)))
    results = ds.map_batches(
        RayChunkMapper, fn_constructor_kwargs={"job": job, "threads": threads}, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=size), **per_actor,
    )
    mpx, t0, last = 0.0, time.perf_counter(), time.perf_counter()
    for row in results.iter_rows():
        mpx += int(row["pixels"]) / 1e6
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            log.info("%.1f Mpx mapped, %.2f Mpx/s", mpx, mpx / (last - t0))
    return mpx


def _publish(out: Path, work: Path, store: CityStore, class_names: list[str], settings: dict, stylize: dict | None,
             cog: bool, quicklook: bool, stats: dict) -> dict:
    """All chunks are done: COGs and quicklooks (each renamed into place), then maps.zarr, then job.json."""
    done = work / "done"
    missing = [info.id for info in store.rasters
               if len(list((done / info.id).glob("*.done"))) != len(plan_chunks(info.id, info.height, info.width, settings["chunk_size"]))]
    if missing:
        raise RuntimeError(f"{out}: chunks missing for {missing}; re-run to finish them")
    maps = zarr.open_group(str(work / "maps.zarr"), mode="r")
    outputs: dict[str, dict] = {}
    for info in store.rasters:
        g, files = maps[info.id], {}
        if cog:
            files["cog"] = str(write_cog(g["classes"], info, out / "cog" / f"{info.id}.tif", nodata=NODATA_CLASS))
            if stylize:
                from rasterio.enums import Resampling

                files["stylized_cog"] = str(write_cog(g["stylized"], info, out / "cog" / f"{info.id}_stylized.tif",
                                                      nodata=store.nodata, resampling=Resampling.average))
        if quicklook:
            files["quicklook"] = str(write_quicklook(g["classes"], out / "quicklook" / f"{info.id}.png", len(class_names)))
        outputs[info.id] = files
    final_zarr = out / "maps.zarr"
    if final_zarr.exists():
        shutil.rmtree(final_zarr)
    os.replace(work / "maps.zarr", final_zarr)
    summary = {"settings": settings, "class_names": class_names, "nodata": NODATA_CLASS, "zarr": str(final_zarr),
               "rasters": outputs, **stats}
    tmp = out / ".job.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "job.json")
    shutil.rmtree(work, ignore_errors=True)
    return summary


def read_classes(out: str | Path, raster: str) -> np.ndarray:
    """A finished job's class map of one raster (whole, for small rasters and tests)."""
    return np.asarray(zarr.open_group(str(Path(out) / "maps.zarr"), mode="r")[raster]["classes"][:])


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
