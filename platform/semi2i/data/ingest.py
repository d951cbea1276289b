"""Ingest a city (rasters + optional labels) into a chunked, compressed Zarr city store.

Every check that can be made from the files' headers runs before a single pixel is written; pixel-level
checks (unknown label colours, out-of-range indices, all-nodata rasters) run during the one streaming
pass that writes the store. The store is written under a temporary name beside the target and renamed
into place only when complete, so a failure never leaves a partial store behind. A store on object storage
(``s3://...``) is written on local scratch and published with its root ``zarr.json`` last
(:meth:`semi2i.locations.Location.publish_tree`): a store without it is not a store, and is replaced.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import dask
import dask.array as da
import numpy as np
import rioxarray
import xarray as xr
import zarr
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from zarr.codecs import BloscCodec

from semi2i import io_paths, locations, placement

from . import ingest_checks
from .ingest_inputs import (IngestError, RasterSource, check_city, expand_paths, inspect_raster, load_class_names,
                            load_palette, pair_images_labels, raster_ids)
from .ingest_stats import StatsAccumulator, stats_block
from .palette import Palette, code_to_rgb, expand_colour_table
from .store import ATTRS_KEY, FORMAT_NAME, FORMAT_VERSION, CityStore, RasterInfo, valid_mask

log = logging.getLogger(__name__)
# Plain JPEG/PNG rasters are accepted on purpose (identity transform, no CRS); dask reads them in
# threads, where a thread-local catch_warnings would not reach, hence a module-wide filter.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

#: Drivers without efficient windowed access: read such rasters as one chunk (they are small by nature).
WHOLE_FILE_DRIVERS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}
#: dask meta for per-block Python objects (partial statistics, colour counts).
_OBJ = np.empty((0, 0), dtype=object)
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
) -> CityStore:
    """Ingest one city into ``out`` (a ``.zarr`` directory, or an object-store URL) and return the opened store.

    ``classes`` is a class list or a JSON file (``{"classes": [{"index", "name"}]}``; a palette file
    works too) for class-index labels; with ``palette`` the class names come from the palette.
    ``compressor`` is a key of :data:`STORE_CODECS`.
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
        for info, stats, raster_max in placement.run_each(write, pieces, stage="ingest"):
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


def _read_lazy(path: Path, blocks: dict[str, int], whole: bool) -> xr.DataArray:
    chunks = {"band": -1, "y": -1, "x": -1} if whole else {"band": -1, **blocks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        arr = rioxarray.open_rasterio(io_paths.gdal_path(path), chunks=chunks, lock=False, mask_and_scale=False, cache=False)
    if whole:
        arr = arr.chunk({"band": -1, **blocks})
    return arr


def _read_blocks(src: RasterSource, chunk: int, threads: int) -> dict[str, int]:
    """Dask blocks of the streaming pass: strips of whole chunk rows (at most ``_STRIP_PIXELS``), cut into
    ``threads`` chunk-aligned columns. Few large blocks: per-block overhead (dask tasks, zarr calls) cost
    more than the pixels on rasters of a few Mpx."""
    rows = max(1, _STRIP_PIXELS // (chunk * max(src.width, 1)))
    cols = -(-src.width // chunk)
    return {"y": rows * chunk, "x": chunk * -(-cols // max(1, min(threads, cols)))}


def _write_raster(store: Path, rid: str, src: RasterSource, pal: Palette | None, class_names: list[str],
                  ignore_index: int, chunk: int, codec: BloscCodec) -> tuple[RasterInfo, StatsAccumulator, int]:
    whole = src.driver in WHOLE_FILE_DRIVERS
    blocks = _read_blocks(src, chunk, placement.task_threads())
    image = _read_lazy(src.image, blocks, whole).data
    valid = da.map_blocks(valid_mask_blocks, image, src.nodata, dtype=bool, drop_axis=0)
    data_vars = {"image": (("band", "y", "x"), image, {"nodata": src.nodata, "band_names": src.band_names, "long_name": "image"})}

    checks: list[tuple[str, da.Array]] = []  # per-block check results: ("colours" | "hist", object array)
    label = None
    if src.label is not None:
        raw = _read_lazy(src.label, blocks, whole or src.label_mode != "index").data
        grid = ((1,) * raw.numblocks[1], (1,) * raw.numblocks[2])
        if src.label_mode == "index":
            raw0 = raw[0]
            if src.label_nodata is not None and src.label_nodata != ignore_index:  # the label's own nodata: ignore
                log.info("%s: label nodata %s becomes the ignore index %d", src.label, src.label_nodata, ignore_index)
                nodata_px = da.isnan(raw0) if np.isnan(src.label_nodata) else raw0 == src.label_nodata
                raw0 = da.where(nodata_px, ignore_index, raw0.astype(np.promote_types(raw0.dtype, np.uint8)))
            label = raw0.astype(np.uint8) if raw0.dtype != np.uint8 else raw0
            if np.dtype(raw0.dtype).kind == "f" or (np.dtype(raw0.dtype).kind in "iu" and np.iinfo(raw0.dtype).max > 255):
                checks.append(("colours", da.map_blocks(_wide_label_check, raw0, dtype=object, meta=_OBJ, chunks=grid)))
        else:
            colormap = src.label_colormap
            label = da.map_blocks(_decode_block, raw, pal, colormap, dtype=np.uint8, drop_axis=0)
            checks.append(("colours", da.map_blocks(_unknown_block, raw, pal, colormap, dtype=object, meta=_OBJ, drop_axis=0,
                                                    chunks=grid)))
        label = da.where(valid, label, np.uint8(ignore_index)).astype(np.uint8)
        data_vars["label"] = (("y", "x"), label, {"ignore_index": ignore_index, "long_name": "class index"})
        checks.append(("hist", da.map_blocks(_label_hist_block, label, dtype=object, meta=_OBJ, chunks=grid)))

    ds = xr.Dataset(data_vars, coords={"band": np.arange(1, src.count + 1)})
    if src.crs is not None:
        ds = ds.rio.write_crs(src.crs)
    ds = ds.rio.write_transform(src.transform)
    ds = ds.assign_coords(_pixel_centres(src))
    ds = ds.rio.write_grid_mapping("spatial_ref")
    ds["image"].encoding.update(chunks=(src.count, chunk, chunk), compressors=(codec,))
    if "label" in ds:
        ds["label"].encoding.update(chunks=(chunk, chunk), compressors=(codec,))
    # xarray writes the metadata and coordinates now; the pixels are written below, strip by strip
    ds.to_zarr(str(store), group=f"rasters/{rid}", mode="w-", compute=False, zarr_format=3, consolidated=False)
    group = zarr.open_group(str(store), path=f"rasters/{rid}", mode="r+")
    targets = [(image, group["image"])] + ([(label, group["label"])] if label is not None else [])
    stats_blocks = da.map_blocks(stats_block, image, valid, dtype=object, meta=_OBJ, drop_axis=0,
                                 chunks=((1,) * image.numblocks[1], (1,) * image.numblocks[2]))

    # Bounded memory: each strip of chunk rows (one row of dask blocks) is read, checked, summarised and
    # written before the next is read, whatever the raster's size. Strips are chunk-aligned, so every zarr
    # chunk has one writer.
    stats = StatsAccumulator(src.count, np.dtype(src.dtype))
    colour_parts, hist = [], np.zeros(256, dtype=np.int64)
    for r in range(image.numblocks[1]):
        ys = slice(r * blocks["y"], min(src.height, (r + 1) * blocks["y"]))
        # the strip's pixels come back as arrays and are written here, in one zarr call per array (zarr
        # encodes the strip's chunks concurrently); dask's threads only read and check, so a failing block
        # leaves no writer behind that could re-create the temporary store after the caller removed it
        arrays = [a[..., ys, :] for a, _ in targets]
        parts = [stats_blocks[r : r + 1]] + [arr[r : r + 1] for _, arr in checks]
        pixels, *results = dask.compute(arrays, *[p.to_delayed().ravel().tolist() for p in parts], scheduler="threads",
                                        num_workers=placement.task_threads())
        for values, (_, z) in zip(pixels, targets):
            z[..., ys, :] = values
        for part in results[0]:
            stats.merge(part[0, 0])
        for (kind, _), result in zip(checks, results[1:]):
            if kind == "hist":
                hist += np.sum([p[0, 0] for p in result], axis=0)
            else:
                colour_parts.extend(result)

    if stats.nonfinite:
        allowed = "NaN" + (f" or the nodata value {src.nodata}" if src.nodata is not None else "")
        raise IngestError(f"{src.image}: {stats.nonfinite} pixels are +-inf (mark them as {allowed}; "
                          "the band statistics would be inf/NaN)")
    if stats.count == 0:
        raise IngestError(f"{src.image}: every pixel is nodata (nodata={src.nodata})")
    max_label = -1
    if src.label is not None:
        _raise_on_bad_labels(src, colour_parts)
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


def _pixel_centres(src: RasterSource) -> dict:
    t = src.transform
    return {"x": t.c + t.a * (np.arange(src.width) + 0.5), "y": t.f + t.e * (np.arange(src.height) + 0.5)}


def valid_mask_blocks(block: np.ndarray, nodata: float | None) -> np.ndarray:
    return valid_mask(block, nodata)


def _rgb(block: np.ndarray, colormap: dict | None) -> np.ndarray:
    return expand_colour_table(block[0], colormap) if colormap is not None else block[:3]


def _decode_block(block: np.ndarray, pal: Palette, colormap: dict | None) -> np.ndarray:
    return pal.decode(_rgb(block, colormap))[0]


def _unknown_block(block: np.ndarray, pal: Palette, colormap: dict | None) -> np.ndarray:
    _, codes, counts = pal.decode(_rgb(block, colormap))
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = dict(zip(codes.tolist(), counts.tolist()))
    return out


def _wide_label_check(block: np.ndarray) -> np.ndarray:
    """Label values that do not fit uint8 (or are not integers) would wrap silently: count them."""
    bad = (block < 0) | (block > 255) | (block != np.floor(block))
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = {"__wide__": int(bad.sum())}
    return out


def _label_hist_block(block: np.ndarray) -> np.ndarray:
    """Per-block histogram of label values (merged to validate indices and find the class count)."""
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = np.bincount(block.ravel(), minlength=256).astype(np.int64)
    return out


def _raise_on_bad_labels(src: RasterSource, parts: Iterable[dict]) -> None:
    merged: dict = {}
    for part in parts:
        for key, n in part[0, 0].items():
            merged[key] = merged.get(key, 0) + n
    wide = merged.pop("__wide__", 0)
    if wide:
        raise IngestError(f"{src.label}: {wide} pixels hold label values that are not integers in 0..255")
    if merged:
        worst = sorted(merged.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{code_to_rgb(c)}: {n} px" for c, n in worst[:5])
        more = f" and {len(worst) - 5} more" if len(worst) > 5 else ""
        raise IngestError(f"{src.label}: {len(worst)} colour(s) not in the palette ({shown}{more}); "
                          f"{sum(merged.values())} pixels in all")
