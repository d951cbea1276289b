"""Ingest a city (rasters + optional labels) into a chunked, compressed Zarr city store.

Every check that can be made from the files' headers runs before a single pixel is written; pixel-level
checks (unknown label colours, out-of-range indices, all-nodata rasters) run during the one streaming
pass that writes the store. The store is written under a temporary name beside the target and renamed
into place only when complete, so a failure never leaves a partial store behind. A store on object storage
(``s3://...``) is written on local scratch and published with its root ``zarr.json`` last
(:meth:`semi2i.locations.Location.publish_tree`): a store without it is not a store, and is replaced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor that writes the CRS and transform)
import xarray as xr
import zarr
import zarr.api.asynchronous
import zarr.storage
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from zarr.abc.store import Store
from zarr.codecs import BloscCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync as zarr_sync

from semi2i import io_paths, locations, placement

from . import ingest_checks
from .ingest_inputs import (IngestError, RasterSource, check_city, expand_paths, inspect_raster, load_class_names,
                            load_palette, pair_images_labels, raster_ids)
from .ingest_stats import StatsAccumulator
from .palette import Palette, code_to_rgb, expand_colour_table
from .store import ATTRS_KEY, FORMAT_NAME, FORMAT_VERSION, CityStore, RasterInfo, valid_mask

log = logging.getLogger(__name__)
# Plain JPEG/PNG rasters are accepted on purpose (identity transform, no CRS); pieces may run in threads
# (a Ray task's), where a thread-local catch_warnings would not reach, hence a module-wide filter.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

#: Drivers without efficient windowed access: read such rasters as one strip (they are small by nature).
WHOLE_FILE_DRIVERS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}
#: Pixels per streaming strip: what one raster pass holds in memory at most (times bands and dtype).
_STRIP_PIXELS = 16_000_000
#: The arrays' codecs (``compressor=``; each array's metadata names its codec, so every store reads the same).
#: ``lz4`` (the default; Blosc LZ4 level 5, byte shuffle: zarr-python 2's default) decodes a 512 x 512 x 3 chunk
#: of the Dubai sensor-D imagery in 0.025 ms against zstd level 1's 1.0 ms (numcodecs, one thread), so a cold
#: patch read is bound by I/O, not by decompression: benchmarks/bench_data.py read 400 random 256² patches at
#: 1.23x rasterio's windows with lz4 against 0.91x with zstd (2026-12-04). ``zstd`` (level 1, byte shuffle: the
#: default before 2026-12-04) writes that city in 60 instead of 80 MiB (this JPEG-compressed imagery barely
#: compresses; labels compress either way): the choice where stores travel over a network more than they are
#: read. Byte shuffle groups the high bytes of 16-bit bands (a no-op on 8-bit data); bit shuffle and higher
#: zstd levels cost 5-10x the encoding time for a few per cent.
STORE_CODECS = {
    "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "zstd": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
}
DEFAULT_COMPRESSOR = "lz4"
STORE_CODEC = STORE_CODECS[DEFAULT_COMPRESSOR]


def ingest_city(
    images: str | Sequence[str],
    out: str | Path | locations.Location,
    *,
    labels: str | Sequence[str] | None = None,
    palette: str | Path | None = None,
    classes: str | Path | Sequence[str] | None = None,
    name: str | None = None,
    ignore_index: int = 255,
    nodata: float | None = None,
    min_size: int = 256,
    chunk_size: int = 512,
    compressor: str = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> CityStore:
    """Ingest one city into ``out`` (a ``.zarr`` directory, or an object-store URL) and return the opened store.

    ``classes`` is a class list or a JSON file (``{"classes": [{"index", "name"}]}``; a palette file
    works too) for class-index labels; with ``palette`` the class names come from the palette.
    ``compressor`` is a key of :data:`STORE_CODECS`. ``threads``: rasters ingested at once when the pieces run
    in this process (default: this machine's cores; on a cluster each raster is a task).
    """
    out_loc = locations.location(out)
    out = out_loc.path or out_loc  # messages name the user's path or URL
    ingest_checks.check_options(chunk_size=chunk_size, ignore_index=ignore_index, min_size=min_size, palette=palette,
                                classes=classes, compressor=compressor, compressors=STORE_CODECS, fail=IngestError)
    if out_loc.published() and not overwrite:
        raise IngestError(f"{out}: output store already exists (pass --overwrite to replace it)")
    pal = load_palette(palette, ignore_index)
    class_names = list(pal.class_names) if pal else load_class_names(classes)
    pairs = pair_images_labels(expand_paths(images, "image"), expand_paths(labels, "label"))
    sources = [inspect_raster(img, lbl, pal, nodata) for img, lbl in pairs]
    check_city(sources, min_size)

    name = name or out_loc.stem
    # written beside the target (renamed into place) or, for object storage, on local scratch (uploaded)
    staged = out_loc.path or locations.scratch_dir("ingest", hashlib.sha1(out_loc.text.encode()).hexdigest()[:12]) / out_loc.name
    ingest_checks.remove_leftovers(staged)
    tmp = ingest_checks.tmp_store_name(staged)
    started = time.perf_counter()
    try:
        try:
            root = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        except OSError as exc:
            raise ingest_checks.write_failure(out, exc, IngestError) from None
        totals = StatsAccumulator(sources[0].count, np.dtype(sources[0].dtype))
        infos, max_label = [], -1
        ids = raster_ids([s.image for s in sources])
        # one piece per raster (a Ray task on a cluster: placement.run_each), each writing its own group
        write = functools.partial(_ingest_raster, Path(tmp).resolve(), pal, class_names, ignore_index, chunk_size,
                                  STORE_CODECS[compressor], name if progress else None, len(sources))
        pieces = [(i, rid, _absolute(src)) for i, (rid, src) in enumerate(zip(ids, sources))]
        root.create_group("rasters")  # the pieces write only their own raster's group under it
        # here, the pieces run on this machine's cores: decoding, codecs and writes release the GIL (2 cores,
        # 2026-12-04: the bright Dubai city's 45 JPEG/PNG rasters 5.07 -> 3.88 s, sensor-D's GeoTIFFs 1.74 -> 1.63 s)
        threads = threads or placement.task_threads()
        for info, stats, raster_max in placement.run_each(write, pieces, stage="ingest", local_threads=threads):
            totals.merge(stats)
            max_label = max(max_label, raster_max)
            infos.append(info)
        if labels is not None and not class_names:
            class_names = [f"class_{k}" for k in range(max_label + 1)]
            log.warning("%s: no class names given (--classes): the label values 0..%d became classes %s; pass --classes "
                        "to name them", sources[0].label, max_label, ", ".join(class_names) if len(class_names) < 6
                        else f"{class_names[0]}..{class_names[-1]}")
        root.attrs[ATTRS_KEY] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": name,
            "band_names": sources[0].band_names,
            "dtype": sources[0].dtype,
            "nodata": sources[0].nodata,
            "class_names": class_names,
            "ignore_index": ignore_index,
            "has_labels": labels is not None,
            "band_stats": totals.band_stats().to_attrs(),
            "rasters": [info.to_attrs() for info in infos],
            "provenance": {
                "images": [str(s.image.resolve()) for s in sources],
                "labels": [str(s.label.resolve()) if s.label else None for s in sources],
                "palette": str(io_paths.as_path(palette).resolve()) if palette else None,
                "files": _local_fingerprints(sources),
                "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }
        out_loc.publish_tree(tmp)  # replaces an existing store: only reachable with overwrite=True
        shutil.rmtree(tmp, ignore_errors=True)  # the uploaded copy (a local rename left nothing)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, RasterioError):
            raise
        raise ingest_checks.write_failure(out, exc, IngestError) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        mpx = sum(s.height * s.width for s in sources) / 1e6
        dt = time.perf_counter() - started
        log.info("ingested %s: %d rasters, %.1f Mpx in %.1fs (%.1f Mpx/s) -> %s", name, len(sources), mpx, dt, mpx / dt, out)
    return CityStore(out_loc)


def _local_fingerprints(sources: list[RasterSource]) -> list[dict]:
    """Size, mtime and SHA-256 of every local input file: a resumed adapt run refuses a store whose files
    changed. The hash tells a re-copied file (new mtime, same bytes: a dataset restored or synced again) from
    an edited one, so the copy does not cost a re-ingest and every stage after it."""
    out = []
    for p in [s.image for s in sources] + [s.label for s in sources if s.label is not None]:
        if isinstance(p, Path):
            st = p.stat()
            out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(p)})
    return out


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------------
# the streaming pass


def _absolute(src: RasterSource) -> RasterSource:
    """``src`` with absolute local paths: a piece may run in another working directory."""
    absolute = {k: v.resolve() for k in ("image", "label") if isinstance(v := getattr(src, k), Path)}
    return dataclasses.replace(src, **absolute)


def _ingest_raster(store: Path, pal: Palette | None, class_names: list[str], ignore_index: int, chunk: int, codec: BloscCodec,
                   progress_name: str | None, total: int, piece: tuple[int, str, RasterSource]
                   ) -> tuple[RasterInfo, StatsAccumulator, int]:
    """Write one raster into the store's ``rasters/<rid>`` group: one piece of :func:`ingest_city`."""
    i, rid, src = piece
    t0 = time.perf_counter()
    try:
        result = _write_raster(store, rid, src, pal, class_names, ignore_index, chunk, codec)
    except RasterioError as exc:  # a truncated or corrupt file: its header read, its pixels do not
        files = [(src.image, "image")] + ([(src.label, "label")] if src.label else [])
        raise ingest_checks.unreadable(files, exc, IngestError) from None
    if progress_name:
        mpx, dt = src.height * src.width / 1e6, time.perf_counter() - t0
        log.info("ingest %s [%d/%d] %s: %.2f Mpx in %.1fs (%.1f Mpx/s)", progress_name, i + 1, total, rid, mpx, dt, mpx / dt)
    return result


def _strip_rows(src: RasterSource, chunk: int) -> int:
    """Rows per streaming strip: whole chunk rows, at most ``_STRIP_PIXELS`` pixels (the whole raster for the
    drivers without windowed access)."""
    if src.driver in WHOLE_FILE_DRIVERS:
        return src.height
    return max(1, _STRIP_PIXELS // (chunk * max(src.width, 1))) * chunk


def _write_raster(store: Path, rid: str, src: RasterSource, pal: Palette | None, class_names: list[str],
                  ignore_index: int, chunk: int, codec: BloscCodec) -> tuple[RasterInfo, StatsAccumulator, int]:
    group = _create_raster_group(store, rid, src, chunk, codec, ignore_index)
    if src.label_mode == "index" and src.label_nodata is not None and src.label_nodata != ignore_index:
        log.info("%s: label nodata %s becomes the ignore index %d", src.label, src.label_nodata, ignore_index)
    stats = StatsAccumulator(src.count, np.dtype(src.dtype))
    colours: dict[int, int] = {}  # colours not in the palette (and "__wide__": label values that do not fit uint8)
    hist = np.zeros(256, dtype=np.int64)
    step = _strip_rows(src, chunk)
    image_out = group["image"]
    label_out = group["label"] if src.label is not None else None
    # Bounded memory: each strip of chunk rows is read, checked, summarised and written before the next is
    # read, whatever the raster's size. Strips are chunk-aligned, so every zarr chunk has one writer. Plain
    # rasterio reads and numpy: a dask graph per raster cost more than the pixels on rasters of a few Mpx
    # (bench_data.py: 2.50 -> 1.82 s for Dubai sensor-D's 27 GeoTIFFs, 2026-12-04). Image and label go to zarr in one
    # call (one round trip into zarr's event loop instead of two). With the group change below, sensor-D's ingest went
    # from 0.78-0.79 to 0.84-0.87 of bench_data.py's raw copy (old and new code run alternately, three times each,
    # medians of 5; Zen 4, 2026-12-04).
    with rasterio.open(io_paths.gdal_path(src.image)) as image_file, \
            (rasterio.open(io_paths.gdal_path(src.label)) if src.label is not None else contextlib.nullcontext()) as label_file:
        for y0 in range(0, src.height, step):
            window = Window(0, y0, src.width, min(step, src.height - y0))
            image = image_file.read(window=window)
            valid = valid_mask(image, src.nodata)
            stats.add(image.reshape(src.count, -1) if valid.all() else image[:, valid])
            rows = slice(y0, y0 + window.height)
            writes = [image_out.async_array.setitem((slice(None), rows, slice(None)), image)]
            if label_file is not None:
                label = _read_labels(label_file, window, src, pal, ignore_index, colours)
                label[~valid] = ignore_index
                hist += np.bincount(label.ravel(), minlength=256)
                writes.append(label_out.async_array.setitem((rows, slice(None)), label))
            zarr_sync(_gather(writes))  # the strip's image and label chunks encoded and written together

    if stats.nonfinite:
        allowed = "NaN" + (f" or the nodata value {src.nodata}" if src.nodata is not None else "")
        raise IngestError(f"{src.image}: {stats.nonfinite} pixels are +-inf (mark them as {allowed}; "
                          "the band statistics would be inf/NaN)")
    if stats.count == 0:
        raise IngestError(f"{src.image}: every pixel is nodata (nodata={src.nodata})")
    max_label = -1
    if src.label is not None:
        _raise_on_bad_labels(src, colours)
        others = [v for v in np.nonzero(hist)[0] if v != ignore_index]
        max_label = int(max(others)) if others else -1
        if class_names and others and max(others) >= len(class_names):
            bad = [int(v) for v in others if v >= len(class_names)]
            n = int(sum(hist[v] for v in bad))
            raise IngestError(f"{src.label}: label values {bad} ({n} pixels) out of range for {len(class_names)} classes "
                              f"(valid: 0..{len(class_names) - 1} and ignore {ignore_index})")
    info = RasterInfo(rid, src.height, src.width, src.crs, src.transform, str(src.image.resolve()),
                      str(src.label.resolve()) if src.label else None, int(stats.count))
    group.attrs[ATTRS_KEY] = info.to_attrs()
    return info, stats, max_label


def _create_raster_group(store: Path, rid: str, src: RasterSource, chunk: int, codec: BloscCodec,
                         ignore_index: int) -> zarr.Group:
    """The raster's group with xarray's and rioxarray's metadata (dimensions, coordinates, CRS, transform), so
    ``xr.open_zarr(..., decode_coords="all")`` gives a georeferenced Dataset; its pixels are written after.

    rioxarray computes the georeferencing (the ``band``/``y``/``x`` coordinates and the CF attributes of
    ``spatial_ref``); zarr writes every array with the names, dimensions, attributes and codecs ``Dataset.to_zarr``
    would give it (test_raster_groups_are_what_xarray_writes_for_the_whole_dataset holds the documents equal to
    xarray's own), each document once, all in one call into zarr's event loop. ``to_zarr`` itself spent most of its
    time in xarray's bookkeeping: Dubai sensor-D's 27 groups took 0.49 s with it and 0.33 s without, on one core of a
    Zen 4 host (2026-12-04), where the whole single-threaded ingest takes 1.5 s."""
    coords = xr.Dataset(coords={"band": np.arange(1, src.count + 1), **_pixel_centres(src)})
    if src.crs is not None:
        coords = coords.rio.write_crs(src.crs)
    coords = coords.rio.write_transform(src.transform)
    # zarr's default codecs and one chunk per coordinate: what to_zarr gives variables without an encoding
    arrays = [dict(name=name, shape=var.shape, dtype=var.dtype, chunks=var.shape, compressors="auto", dims=var.dims,
                   attrs=dict(var.attrs), data=var.values) for name, var in coords.variables.items()]
    shape = (src.height, src.width)
    # the pixel arrays name the CRS variable (grid_mapping), as in a store xarray writes with them
    arrays.append(dict(name="image", shape=(src.count, *shape), dtype=np.dtype(src.dtype), chunks=(src.count, chunk, chunk),
                       compressors=(codec,), dims=("band", "y", "x"), attrs={
                           "nodata": src.nodata, "band_names": src.band_names, "long_name": "image", "grid_mapping": "spatial_ref"}))
    if src.label is not None:
        arrays.append(dict(name="label", shape=shape, dtype=np.dtype(np.uint8), chunks=(chunk, chunk), compressors=(codec,),
                           dims=("y", "x"), attrs={"ignore_index": ignore_index, "long_name": "class index",
                                                   "grid_mapping": "spatial_ref"}))
    zarr_sync(_create_group(zarr.storage.LocalStore(str(store)), f"rasters/{rid}", arrays))
    return zarr.open_group(str(store), path=f"rasters/{rid}", mode="r+")


async def _gather(writes: list) -> None:
    await asyncio.gather(*writes)


async def _create_group(store: Store, path: str, arrays: list[dict]) -> None:
    """Create the group and its arrays in memory, then copy the documents to ``store``: zarr's creation checks and
    parent documents cost several file reads and atomic writes per array on a local store, in memory nothing."""
    memory = zarr.storage.MemoryStore()
    group = await zarr.api.asynchronous.open_group(store=memory, path=path, mode="w-", zarr_format=3)
    await asyncio.gather(*(_create_array(group, **spec) for spec in arrays))
    keys = [key async for key in memory.list_prefix(f"{path}/")]
    buffers = await asyncio.gather(*(memory.get(key, default_buffer_prototype()) for key in keys))
    await asyncio.gather(*(store.set(key, buffer) for key, buffer in zip(keys, buffers)))


async def _create_array(group: AsyncGroup, name: str, shape: tuple, dtype: np.dtype, chunks: tuple, compressors,
                        dims: tuple, attrs: dict, data: np.ndarray | None = None) -> None:
    """An array as ``Dataset.to_zarr`` creates it: dimension names, the given attributes and, for floats, xarray's
    NaN fill value with its base64 ``_FillValue`` attribute; ``data`` is written when given."""
    fill = 0
    if np.dtype(dtype).kind == "f":
        fill = np.nan
        attrs = {**attrs, "_FillValue": base64.standard_b64encode(np.array(np.nan, dtype=np.float64).tobytes()).decode()}
    array = await group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=compressors,
                                     fill_value=fill, dimension_names=dims, attributes=attrs)
    if data is not None:
        await array.setitem(Ellipsis, data)


def _read_labels(file: rasterio.DatasetReader, window: Window, src: RasterSource, pal: Palette | None, ignore_index: int,
                 colours: dict) -> np.ndarray:
    """A strip's class indices (uint8, a writable array); colours not in the palette and label values that do not
    fit uint8 are counted into ``colours`` (the raster is refused after the pass, with every offender named)."""
    if src.label_mode != "index":
        raw = file.read(window=window)
        rgb = expand_colour_table(raw[0], src.label_colormap) if src.label_mode == "colour-table" else raw[:3]
        label, codes, counts = pal.decode(rgb)
        for code, n in zip(codes.tolist(), counts.tolist()):
            colours[code] = colours.get(code, 0) + n
        return label
    raw = file.read(1, window=window)
    if src.label_nodata is not None and src.label_nodata != ignore_index:  # the label's own nodata: ignore
        nodata_px = np.isnan(raw) if np.isnan(src.label_nodata) else raw == src.label_nodata
        raw = np.where(nodata_px, ignore_index, raw.astype(np.promote_types(raw.dtype, np.uint8)))
    if raw.dtype.kind == "f" or (raw.dtype.kind in "iu" and np.iinfo(raw.dtype).max > 255):
        wide = int(((raw < 0) | (raw > 255) | (raw != np.floor(raw))).sum())
        if wide:
            colours["__wide__"] = colours.get("__wide__", 0) + wide
    return raw.astype(np.uint8)


def _pixel_centres(src: RasterSource) -> dict:
    t = src.transform
    return {"x": t.c + t.a * (np.arange(src.width) + 0.5), "y": t.f + t.e * (np.arange(src.height) + 0.5)}


def _raise_on_bad_labels(src: RasterSource, colours: dict) -> None:
    merged = dict(colours)
    wide = merged.pop("__wide__", 0)
    if wide:
        raise IngestError(f"{src.label}: {wide} pixels hold label values that are not integers in 0..255")
    if merged:
        worst = sorted(merged.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{code_to_rgb(c)}: {n} px" for c, n in worst[:5])
        more = f" and {len(worst) - 5} more" if len(worst) > 5 else ""
        raise IngestError(f"{src.label}: {len(worst)} colour(s) not in the palette ({shown}{more}); "
                          f"{sum(merged.values())} pixels in all")
