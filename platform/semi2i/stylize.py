"""Stylize a whole city: every raster of a source store through a stylizer, into a new city store.

The output is what fine-tuning reads: the stylized rasters as georeferenced GeoTIFFs (the source's
CRS and transform, the target's dtype and band count, so users can open them in a GIS) with the
*source labels*, ingested into a city store. Nodata pixels stay nodata. Deterministic: a stylizer
maps the same input to the same output, so re-running reproduces the same store.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from semi2i import placement
from semi2i.data.geotiff import write_geotiff
from semi2i.data.ingest import ingest_city
from semi2i.data.store import CityStore
from semi2i.stylizers.base import Stylizer

log = logging.getLogger(__name__)


def stylize_city(source: CityStore, stylizer: Stylizer | Callable[[], Stylizer], out_dir: str | Path, *,
                 target_dtype: np.dtype | str, name: str | None = None, overwrite: bool = False,
                 num_gpus: float = 0) -> CityStore:
    """Write ``<out_dir>/images/*.tif``, ``<out_dir>/labels/*.tif`` and ``<out_dir>/store.zarr``.

    One piece per raster (:func:`semi2i.placement.run_each`: Ray tasks on a cluster, of ``num_gpus`` GPUs
    each). ``stylizer`` is a stylizer, or a picklable factory of one (e.g. a ``functools.partial`` of
    :func:`semi2i.stylizers.load_stylizer`), called where the rasters are stylized: a GPU stylizer is then
    built on the GPU worker, not on the driver."""
    out_dir = Path(out_dir)
    store_path = out_dir / "store.zarr"
    if store_path.exists() and not overwrite:
        raise FileExistsError(f"{store_path}: stylized store already exists (overwrite=True to replace it)")
    if isinstance(stylizer, Stylizer) and stylizer.in_bands != source.num_bands:
        raise ValueError(f"{stylizer!r} expects {stylizer.in_bands} bands, {source.path} has {source.num_bands}")
    dtype = np.dtype(target_dtype)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}").resolve()
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    piece = functools.partial(_stylize_raster, stylizer, Path(source.path).resolve(), source.name, tmp, dtype)
    try:
        written = placement.run_each(piece, [info.id for info in source.rasters], stage="stylize", num_gpus=num_gpus)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mpx = sum(s.height * s.width for s in source.rasters) / 1e6
    log.info("stylized %s: %d rasters, %.1f Mpx in %.1f s", source.name, len(written), mpx, time.perf_counter() - started)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    # the store is written last (atomically): its presence is what marks the stylized city complete
    return ingest_city(
        [str(out_dir / "images" / Path(image).name) for image, _ in written],
        store_path,
        labels=[str(out_dir / "labels" / Path(label).name) for _, label in written if label] or None,
        classes=source.class_names if source.has_labels else None,
        name=name or f"{source.name}-{getattr(stylizer, 'name', 'stylized')}",
        ignore_index=source.ignore_index,
        nodata=source.nodata,
        min_size=1,
        progress=False,
    )


def _stylize_raster(stylizer: Stylizer | Callable[[], Stylizer], store_path: Path, city: str, tmp: Path,
                    dtype: np.dtype, raster: str) -> tuple[str, str | None]:
    """Stylize one raster of the store into ``tmp``'s GeoTIFFs (and copy its labels): a piece of
    :func:`stylize_city`. Returns the image and label paths."""
    if not isinstance(stylizer, Stylizer):
        stylizer = stylizer()
    source = CityStore(store_path)
    if stylizer.in_bands != source.num_bands:
        raise ValueError(f"{stylizer!r} expects {stylizer.in_bands} bands, {source.path} has {source.num_bands}")
    started = time.perf_counter()
    info = source.raster(raster)
    raw = source.read(raster)
    fake = _to_dtype(stylizer.stylize(raw), dtype)
    _keep_nodata(fake, source.valid_mask(raw), source.nodata)
    image = str(write_geotiff(tmp / "images" / f"{raster}.tif", fake, info, nodata=source.nodata))
    label = None
    if source.has_labels:
        label = str(write_geotiff(tmp / "labels" / f"{raster}.tif", source.read(raster, "label"), info, nodata=source.ignore_index))
    mpx = info.height * info.width / 1e6
    log.info("stylize %s (%s): %s %.2f Mpx, %.2f Mpx/s", city, stylizer.name, raster, mpx,
             mpx / max(time.perf_counter() - started, 1e-9))
    return image, label


def _keep_nodata(fake: np.ndarray, valid: np.ndarray, nodata: float | None) -> None:
    """Nodata pixels become nodata; a valid pixel that happens to equal nodata in every band is
    nudged by one step in its first band, so it is not lost as nodata on re-reading."""
    if nodata is None or np.isnan(nodata):
        return
    fill = np.asarray(nodata).astype(fake.dtype)
    collide = valid & (fake == fill).all(axis=0)
    top = np.iinfo(fake.dtype).max if fake.dtype.kind in "iu" else np.inf
    fake[0][collide] = fill + 1 if fill < top else fill - 1
    fake[:, ~valid] = fill


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip stylized float pixels into the target's integer range (floats pass through)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)
