"""Outputs of a mapping job: the chunk-aligned zarr, Cloud-Optimized GeoTIFFs and PNG quicklooks.

COGs are written from the zarr block by block (bounded memory) into a tiled GeoTIFF with overviews,
then copied by GDAL's COG driver; every file is written under a temporary name and renamed when complete
(an output on object storage is written on local scratch and uploaded whole: one PUT).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window

from semi2i import locations
from semi2i.data.geotiff import geotiff_profile
from semi2i.data.store import RasterInfo
from semi2i.previews import class_colours

from .worker import NODATA_CLASS


def create_outputs(path: Path, rasters: list[RasterInfo], chunk: int, *, class_names: list[str],
                   probabilities: bool, stylized: tuple[int, str, float | None] | None) -> None:
    """One group per raster with ``classes`` (H, W) uint8 chunked C x C (one writer per chunk), and
    optionally ``probabilities`` (K, H, W) uint8 and ``stylized`` (bands, H, W)."""
    root = zarr.open_group(locations.location(path).zarr_store(), mode="w", zarr_format=3)
    root.attrs["semi2i_map"] = {"class_names": class_names, "nodata": NODATA_CLASS, "chunk": chunk}
    for info in rasters:
        g = root.create_group(info.id)
        g.attrs["raster"] = info.to_attrs()
        g.create_array("classes", shape=(info.height, info.width), chunks=(chunk, chunk), dtype="uint8",
                       fill_value=NODATA_CLASS)
        if probabilities:
            k = len(class_names)
            g.create_array("probabilities", shape=(k, info.height, info.width), chunks=(k, chunk, chunk),
                           dtype="uint8", fill_value=0)
        if stylized is not None:
            bands, dtype, nodata = stylized
            g.create_array("stylized", shape=(bands, info.height, info.width), chunks=(bands, chunk, chunk),
                           dtype=dtype, fill_value=0 if nodata is None else nodata)


def write_cog(array: zarr.Array, info: RasterInfo, dest: Path | locations.Location, *, nodata: float | None,
              block: int = 1024, resampling: Resampling = Resampling.nearest) -> Path | locations.Location:
    """(H, W) or (bands, H, W) zarr array -> COG with the raster's CRS, transform and nodata, plus overviews."""
    with locations.location(dest).writing() as path:
        _write_cog(array, info, path, nodata=nodata, block=block, resampling=resampling)
    return dest


def _write_cog(array: zarr.Array, info: RasterInfo, path: Path, *, nodata: float | None, block: int,
               resampling: Resampling, stage_zlevel: int = 1) -> None:
    bands = 1 if array.ndim == 2 else array.shape[0]
    height, width = array.shape[-2:]
    # NUM_THREADS: GDAL deflates the tiles on every core (each tile alone, so the bytes do not change).
    # stage_zlevel 1: the stage is read once by the COG copy, which re-encodes every tile at the default level, so
    # its own level changes no byte of the COG, only the time (benchmarks/bench_cog.py; uncompressed would be a
    # little faster still, at a scratch file of the raw size).
    profile = {**geotiff_profile(info, count=bands, dtype=str(array.dtype), nodata=nodata, block=512),
               "num_threads": "ALL_CPUS", "zlevel": stage_zlevel}
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.with_name(f".{path.stem}.stage-{os.getpid()}.tif")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with rasterio.open(stage, "w", **profile) as dst:
            for y in range(0, height, block):
                for x in range(0, width, block):
                    h, w = min(block, height - y), min(block, width - x)
                    data = np.asarray(array[..., y : y + h, x : x + w])
                    dst.write(data[None] if data.ndim == 2 else data, window=Window(x, y, w, h))
            factors = _overview_factors(height, width)
            if factors:
                dst.build_overviews(factors, resampling)
        rasterio.shutil.copy(stage, tmp, driver="COG", compress="DEFLATE", blocksize=512, BIGTIFF="IF_SAFER",
                             overview_resampling=resampling.name.upper(), overviews="FORCE_USE_EXISTING",
                             num_threads="ALL_CPUS")
        os.replace(tmp, path)
    finally:
        for p in (stage, tmp):
            if p.exists():
                p.unlink()


def _overview_factors(height: int, width: int, smallest: int = 256) -> list[int]:
    factors, f = [], 2
    while max(height, width) / f >= smallest / 2 and f <= 1 << 16:
        factors.append(f)
        f *= 2
    return factors


def write_quicklook(classes: zarr.Array, dest: Path | locations.Location, num_classes: int,
                    max_size: int = 1024) -> Path | locations.Location:
    """A PNG of the class map (class colours, nodata grey), strided down to at most ``max_size`` pixels."""
    height, width = classes.shape
    step = max(1, -(-max(height, width) // max_size))
    small = np.asarray(classes[::step, ::step])
    rgb = class_colours(num_classes)[small]
    with locations.location(dest).writing() as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
        Image.fromarray(rgb).save(tmp)
        os.replace(tmp, path)
    return dest
