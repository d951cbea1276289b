"""Map a region: plan chunks, run them (in process or as Ray tasks), then publish outputs.

Layout of ``out``::

    out/.partial/               work in progress (resumable): job.json,
                                inputs.json (fingerprints of the inputs), warped/*.vrt (--resample),
                                maps.zarr (chunks being written), done/<raster>/<row>_<col>.done
    out/maps.zarr               class maps (+ probabilities, stylized) per raster, chunk-aligned
    out/cog/<raster>.tif        Cloud-Optimized GeoTIFF of the class map (input CRS/transform, nodata 255)
    out/cog/<raster>_stylized.tif
    out/quicklook/<raster>.png
    out/job.json                written last: its presence marks the job complete

Raster inputs are read where they lie, window by window, by the tasks that map them
(:class:`.rasters.RasterInput`): no copy of the region is made; a city store is read from zarr.

``out`` may be an object-store URL (``s3://bucket/maps/region``): the same layout, through
:class:`semi2i.locations.Location`. Tasks write zarr chunks and ``.done`` markers as objects (one writer per
chunk, each a PUT); COGs and quicklooks are written on local scratch and uploaded whole; maps.zarr is
copied out of ``.partial`` with its root ``zarr.json`` last, and ``job.json`` comes last of all.

A re-run with the same job settings skips finished chunks; other settings are refused (``overwrite``).
Other or changed input is never resumed (:func:`_restart_if_input_changed`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import zarr

from semi2i import io_paths, locations, placement
from semi2i.data.store import CityStore
from semi2i.checkpoints import load_checkpoint
from semi2i.config import PRECISIONS
from semi2i.tiling import default_window

from .inputs import (
    MappingError, check_bands, describe_change, fingerprints, grid_mismatches, input_paths, model_grid,
    warp_to_grid,
)
from .rasters import RasterInput, open_input
from .output import create_outputs, write_cog, write_quicklook
from .windows import Chunk, plan_chunks
from .local import run_local
from .worker import NODATA_CLASS

log = logging.getLogger(__name__)


def _fingerprint(path: str | Path | locations.Location) -> dict:
    return locations.location(path).fingerprint()


def _store_stamp(store: str | Path | locations.Location) -> str:
    return hashlib.sha1((locations.location(store) / "zarr.json").read_bytes()).hexdigest()


def map_region(input: str | Path | list, checkpoint: str | Path, out: str | Path, *, use_ray: bool = False,
               **options) -> dict:
    """Map every raster of ``input`` with the U-net ``checkpoint`` into ``out``; returns the job summary
    (options: :func:`_map_region`). With ``use_ray`` every piece of pixel work runs on the Ray cluster
    (:mod:`semi2i.placement`): the chunks (read straight from the input) and the COGs as Ray tasks; the
    summary's ``placement`` says where each ran."""
    with placement.on_cluster(use_ray), placement.recording():
        return _map_region(input, checkpoint, out, use_ray=use_ray, **options)


def _map_region(
    input: str | Path | list,
    checkpoint: str | Path,
    out: str | Path,
    *,
    chunk_size: int = 1024,
    overlap: int = 32,
    batch_tiles: int | None = None,
    probabilities: bool = False,
    stylize: dict | None = None,
    workers: int | None = None,
    use_ray: bool = False,
    device: str | None = None,
    cog: bool = True,
    quicklook: bool = True,
    overwrite: bool = False,
    resample: bool = False,
    on_chunk: Callable[[Chunk], None] | None = None,
    window: int | None = None,
    precision: str = "fp32",
    channels_last: bool | None = None,
    tf32: bool = False,
    threads: int | None = None,
) -> dict:
    """The mapping job (:func:`map_region`).

    ``stylize``: ``{"checkpoint": semi2i.pt, "source": "a"|"b", "source_stats": BandStats attrs,
    "target_stats": ..., "in_bands", "out_bands", "dtype": output dtype[, "overlap"]}`` runs SemI2I before the U-net (the stylized imagery is
    written too). ``resample`` warps input rasters whose CRS or pixel size differ from the model's training
    imagery to the model's grid (outputs are then on that grid). ``on_chunk`` is called after each finished chunk on the in-process path (progress, tests).

    Inference options (defaults: fp32, windows of twice the model's patch size, channels_last on CPU, see
    :mod:`.worker`): ``window`` (window edge in px), ``batch_tiles`` (windows per forward pass; default
    :func:`semi2i.tiling.default_batch_windows` of the device the chunks run on), ``precision`` (``"fp32"`` | ``"bf16"`` autocast | ``"auto"``: bf16 on devices with bf16 units, decided by each piece), ``channels_last``,
    ``tf32`` (CUDA). ``threads``: chunk threads on the in-process path (default :func:`.local.default_threads`).
    """
    out = locations.location(out)
    checkpoint = locations.location(checkpoint)
    _check_numbers(chunk_size=chunk_size, overlap=overlap, batch_tiles=batch_tiles, workers=workers, window=window,
                   threads=threads)
    if precision not in PRECISIONS:
        raise MappingError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if stylize is not None:
        stylize = {"overlap": overlap, **stylize}
    if not checkpoint.is_file():
        raise MappingError(f"{checkpoint}: U-net checkpoint not found")
    if stylize and not locations.location(stylize["checkpoint"]).is_file():
        raise MappingError(f"{stylize['checkpoint']}: SemI2I checkpoint not found")
    # everything about the input and the model is checked from headers before anything is written
    store_in, paths = input_paths(input)
    state = _load_unet(checkpoint)
    in_bands = stylize["in_bands"] if stylize else int(state["in_bands"])
    if stylize and stylize.get("out_bands") not in (None, int(state["in_bands"])):
        raise MappingError(f"{stylize['checkpoint']}: stylizes to {stylize['out_bands']} bands, "
                           f"{checkpoint} expects {state['in_bands']}")
    check_bands(store_in, paths, in_bands, locations.location(stylize["checkpoint"]) if stylize else checkpoint)
    patch = int(state["unet"]["patch_size"])
    window = window or default_window(patch)
    if overlap >= window:
        raise MappingError(f"--overlap {overlap} must be smaller than the {window} px windows")
    grid = model_grid(state)
    if resample and grid is None:
        raise MappingError(f"{checkpoint}: records no training CRS/resolution (trained before they were recorded, or on "
                           "imagery without a CRS), so --resample has no grid to resample to")
    mismatched = grid_mismatches(store_in, paths, grid, checkpoint, warn=not resample)
    if resample and mismatched and store_in is not None:
        raise MappingError(f"{store_in}: --resample works on raster files, not on a city store")
    warp = bool(resample and mismatched)
    inputs = {"files": fingerprints(store_in, paths),
              "resample": {"crs_wkt": grid[0].to_wkt(), "resolution": list(grid[1])} if warp else None}

    created = not out.exists()
    if (out / "job.json").exists():
        if not overwrite:
            done = json.loads((out / "job.json").read_text()).get("settings", {}).get("inputs")
            why = f" ({describe_change(done.get('files'), inputs['files'])})" if done and done != inputs else ""
            raise MappingError(f"{out}: already mapped{why} (job.json exists; --overwrite redoes it)")
        for name in ("job.json", "maps.zarr", "cog", "quicklook", ".partial"):
            (out / name).remove()
    work = out / ".partial"
    _restart_if_input_changed(out, work, inputs, overwrite)
    try:
        work.mkdir()
        if store_in is not None:
            source = {"store": str(locations.location(store_in).resolve())}
        else:
            files = paths
            if warp:
                warped = dict(zip(mismatched, warp_to_grid(mismatched, grid, work.staging() / "warped")))
                files = [warped.get(p, p) for p in paths]
            # read where they lie, by the tasks (absolute: tasks run in other working directories)
            source = {"rasters": [p if io_paths.is_url(p) else str(Path(p).resolve()) for p in files]}
        _atomic_json(work / "inputs.json", inputs)
    except BaseException:  # nothing mapped yet: leave nothing behind (warped inputs are kept only with their record)
        if created:
            _remove_quietly(out)
        elif not _has_progress(work):
            _remove_quietly(work)
        raise
    store = open_input(source)
    if store.num_bands != in_bands:
        raise MappingError(f"{paths[0] if paths else store.path}: {store.num_bands} bands, but "
                           f"{checkpoint if not stylize else stylize['checkpoint']} expects {in_bands}")
    class_names = list(state["class_names"])

    settings = {
        "inputs": inputs, "checkpoint": _fingerprint(checkpoint), "store": source.get("store"),
        "store_stamp": _store_stamp(source["store"]) if "store" in source else None,
        "chunk_size": chunk_size, "overlap": overlap, "probabilities": probabilities,
        "stylize": None if not stylize else {**stylize, "fingerprint": _fingerprint(stylize["checkpoint"])},
    }
    inference = {"window": window, "precision": precision, "channels_last": channels_last, "tf32": tf32}
    if inference != {"window": patch, "precision": "fp32", "channels_last": None, "tf32": False}:
        # recorded unless all are the first defaults (windows of the patch size), so jobs begun before these
        # options resume, and one begun with other windows is refused rather than finished with a seam
        settings["inference"] = inference
    job_file = work / "job.json"
    zarr_path = work / "maps.zarr"
    if job_file.exists() and json.loads(job_file.read_text()) != json.loads(json.dumps(settings)):
        if not overwrite:
            raise MappingError(f"{out}: an unfinished job with other settings is there (--overwrite restarts it)")
        job_file.remove()
        zarr_path.remove()
        (work / "done").remove()
    if job_file.exists() and not zarr_path.published() and (out / "maps.zarr").published():
        (out / "maps.zarr").move_tree(zarr_path)  # killed while publishing: take the published zarr back
    if not job_file.exists() or not zarr_path.published():
        zarr_path.remove()
        (work / "done").remove()
        sty_out = (stylize["out_bands"], stylize["dtype"], store.nodata) if stylize else None
        create_outputs(zarr_path, store.rasters, chunk_size, class_names=class_names,
                       probabilities=probabilities, stylized=sty_out)
        job_file.write_text(json.dumps(settings, indent=1))

    job = {"checkpoint": str(checkpoint), "input": source, "zarr": str(zarr_path), "done_dir": str(work / "done"),
           "overlap": overlap, "batch_tiles": batch_tiles, "probabilities": probabilities, "stylize": stylize,
           "device": device, **inference}
    chunks = [c for info in store.rasters for c in plan_chunks(info.id, info.height, info.width, chunk_size)]
    finished = set((work / "done").files())  # one listing, not one request per chunk
    todo = [c for c in chunks if f"{c.raster}/{c.row}_{c.col}.done" not in finished]
    total_mpx = sum(c.pixels for c in chunks) / 1e6
    log.info("map %s: %d rasters, %.1f Mpx, %d chunks of %d px (%d to do) with %s",
             store.name, len(store.rasters), total_mpx, len(chunks), chunk_size, len(todo), checkpoint.name)

    started = time.perf_counter()
    if todo:
        try:
            if use_ray:
                mpx = _run_ray(job, todo, chunk_size, workers)
            else:
                mpx = run_local(job, todo, chunk_size, on_chunk, threads)
                placement.record("map", [placement.here()])
        except MappingError:  # bad pixels (a truncated file, +-inf) before any chunk was done: leave nothing behind
            if not _has_progress(work):
                _remove_quietly(out if created else work)
            raise
        elapsed = time.perf_counter() - started
        log.info("mapped %.1f Mpx in %.1fs: %.2f Mpx/s", mpx, elapsed, mpx / max(elapsed, 1e-9))
    else:
        mpx, elapsed = 0.0, 0.0
    return _publish(out, work, store, class_names, settings, stylize, cog, quicklook,
                    {"mpx": total_mpx, "computed_mpx": mpx, "seconds": elapsed, "chunks": len(chunks),
                     "computed_chunks": len(todo)})


def _check_numbers(**values: int | None) -> None:
    limits = {"chunk_size": 1, "overlap": 0, "batch_tiles": 1, "workers": 1, "window": 1, "threads": 1}
    for key, value in values.items():
        if value is not None and (not isinstance(value, int) or value < limits[key]):
            raise MappingError(f"--{key.replace('_', '-')} must be an integer >= {limits[key]}, got {value}")


def _load_unet(checkpoint: locations.Location) -> dict:
    try:
        state = load_checkpoint(checkpoint)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a truncated or foreign file
        raise MappingError(f"{checkpoint}: cannot read the checkpoint ({type(exc).__name__}: "
                           f"{(str(exc).splitlines() or [''])[0][:120]})") from None
    missing = [k for k in ("model", "in_bands", "class_names", "unet", "stats") if not isinstance(state, dict) or k not in state]
    if missing:
        raise MappingError(f"{checkpoint}: not a U-net checkpoint (no {', '.join(missing)}); give a unet_*.pt of an adapt run")
    return state


def _has_progress(work: locations.Location) -> bool:
    return any(n.endswith(".done") for n in (work / "done").files())


def _remove_quietly(where: locations.Location) -> None:
    try:
        where.remove()
    except OSError:
        log.warning("%s: could not remove the unfinished job's files", where)


def _restart_if_input_changed(out: locations.Location, work: locations.Location, inputs: dict, overwrite: bool) -> None:
    """An unfinished job whose recorded input differs from ``inputs`` (other files, or the same files
    changed since) is never resumed: with no chunk done yet it restarts, else it is refused (``overwrite``
    restarts it)."""
    if not work.exists():
        return
    try:
        recorded = json.loads((work / "inputs.json").read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == inputs:
        return
    why = describe_change(recorded.get("files") if recorded else None, inputs["files"])
    if _has_progress(work) and not overwrite:
        raise MappingError(f"{out}: holds an unfinished job, but {why}; --overwrite restarts it with this input")
    log.info("%s: restarting the unfinished job (%s)", out, why)
    work.remove()


def _atomic_json(path: locations.Location, value: dict) -> None:
    path.write_text(json.dumps(value, indent=1))


def _run_ray(job: dict, todo: list[Chunk], chunk_size: int, workers: int | None) -> float:
    """The chunks as Ray tasks (:func:`semi2i.placement.run_each`): each piece is a row-major run of
    neighbouring chunks (they share border windows through the piece's window cache), mapped by the
    in-process path with the piece's CPUs as threads, or on a GPU when the cluster has GPUs."""
    import ray

    if not ray.is_initialized():  # joins the cluster of RAY_ADDRESS / `ray job submit`, else a local Ray
        ray.init(include_dashboard=False, log_to_driver=os.environ.get("SEMI2I_WORKER_LOGS", "1") == "1")
    slots, resources = _piece_resources(workers)
    if resources.get("num_gpus"):
        job = {**job, "device": "cuda"}
    n = max(1, min(len(todo), 4 * slots))  # several pieces per slot: a slow node does not hold up the end
    pieces = [todo[i * len(todo) // n : (i + 1) * len(todo) // n] for i in range(n)]
    threads = None if resources.get("num_gpus") else max(1, int(resources["num_cpus"]))  # None: run_local's GPU default
    piece = functools.partial(_map_piece, job, chunk_size, threads)
    return sum(placement.run_each(piece, pieces, stage="map", **resources))


def _map_piece(job: dict, chunk_size: int, threads: int | None, chunks: list[Chunk]) -> float:
    """One piece of :func:`_run_ray`: its chunks mapped (and marked done) here, in a Ray worker."""
    return run_local(job, chunks, chunk_size, threads=threads)


def _piece_resources(workers: int | None) -> tuple[int, dict]:
    """(pieces that run at once, resources per piece): one GPU each when the cluster has GPUs; else the CPUs
    of the smallest CPU node each (every node can take a piece, and within a piece the in-process path's
    chunk threads overlap one chunk's reads and writes with another's forward passes, which one-CPU pieces
    cannot); ``workers`` pieces at once sharing the devices when given."""
    nodes = [n["Resources"] for n in placement.nodes_in_reach()]  # the driver's node alone for a run on object storage
    gpus = int(sum(n.get("GPU", 0) for n in nodes))
    cpus = int(sum(n.get("CPU", 0) for n in nodes))
    smallest = int(min((n["CPU"] for n in nodes if n.get("CPU", 0) >= 1), default=1))
    if gpus:  # more pieces than GPUs share them (fractional GPUs) rather than wait for ones that never come
        slots = workers or gpus
        return slots, {"num_gpus": min(1.0, gpus / slots)}
    slots = workers or max(1, cpus // smallest)
    if slots > cpus:
        return slots, {"num_cpus": cpus / slots}
    return slots, {"num_cpus": max(1, min(smallest, cpus // slots))}


def _publish(out: locations.Location, work: locations.Location, store: CityStore | RasterInput, class_names: list[str], settings: dict, stylize: dict | None,
             cog: bool, quicklook: bool, stats: dict) -> dict:
    """All chunks are done: COGs and quicklooks (each renamed into place), then maps.zarr, then job.json."""
    done = [n for n in (work / "done").files() if n.endswith(".done")]
    missing = [info.id for info in store.rasters
               if sum(n.startswith(info.id + "/") for n in done) != len(plan_chunks(info.id, info.height, info.width, settings["chunk_size"]))]
    if missing:
        raise RuntimeError(f"{out}: chunks missing for {missing}; re-run to finish them")
    piece = functools.partial(_publish_raster, (work / "maps.zarr").resolve(), out.resolve(), len(class_names),
                              store.nodata, bool(stylize), cog, quicklook)
    written = placement.run_each(piece, store.rasters, stage="publish")
    outputs = {info.id: {kind: str(out / name) for kind, name in files.items()} for info, files in zip(store.rasters, written)}
    final_zarr = out / "maps.zarr"
    (work / "maps.zarr").move_tree(final_zarr)
    summary = {"settings": settings, "class_names": class_names, "nodata": NODATA_CLASS, "zarr": str(final_zarr),
               "rasters": outputs, **stats, "placement": placement.current()}
    (out / "job.json").write_text(json.dumps(summary, indent=1))
    _remove_quietly(work)
    return summary


def _publish_raster(maps_zarr: locations.Location, out: locations.Location, num_classes: int, nodata: float | None,
                    stylized: bool, cog: bool, quicklook: bool, info) -> dict[str, str]:
    """One raster's COGs and quicklook, from the finished chunks in ``maps_zarr``: a piece of :func:`_publish`.
    Returns the files written, relative to ``out``."""
    group, files = zarr.open_group(maps_zarr.zarr_store(read_only=True), mode="r")[info.id], {}
    if cog:
        write_cog(group["classes"], info, out / "cog" / f"{info.id}.tif", nodata=NODATA_CLASS)
        files["cog"] = f"cog/{info.id}.tif"
        if stylized:
            from rasterio.enums import Resampling

            write_cog(group["stylized"], info, out / "cog" / f"{info.id}_stylized.tif", nodata=nodata,
                      resampling=Resampling.average)
            files["stylized_cog"] = f"cog/{info.id}_stylized.tif"
    if quicklook:
        write_quicklook(group["classes"], out / "quicklook" / f"{info.id}.png", num_classes)
        files["quicklook"] = f"quicklook/{info.id}.png"
    return files


def read_classes(out: str | Path, raster: str) -> np.ndarray:
    """A finished job's class map of one raster (whole, for small rasters and tests)."""
    maps = locations.location(out) / "maps.zarr"
    return np.asarray(zarr.open_group(maps.zarr_store(read_only=True), mode="r")[raster]["classes"][:])


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
