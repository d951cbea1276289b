"""Write arrays on a city raster's grid as tiled, compressed GeoTIFFs, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio

from .store import RasterInfo


def geotiff_profile(info: RasterInfo, *, count: int, dtype: str, nodata: float | None = None, block: int = 256) -> dict:
    """A tiled (when the raster is large enough), deflate-compressed GeoTIFF profile on the raster's grid."""
    profile = dict(driver="GTiff", height=info.height, width=info.width, count=count, dtype=str(dtype),
                   transform=info.transform, compress="deflate", BIGTIFF="IF_SAFER")
    if min(info.height, info.width) >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if info.crs is not None:
        profile["crs"] = info.crs
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def write_geotiff(path: str | Path, array: np.ndarray, info: RasterInfo, nodata: float | None = None) -> Path:
    """(bands, H, W) or (H, W) -> GeoTIFF with the raster's CRS and transform (temp file, then rename)."""
    path = Path(path)
    array = array[None] if array.ndim == 2 else array
    if array.shape[1:] != (info.height, info.width):
        raise ValueError(f"{path}: array of {array.shape[1:]} does not fit raster {info.id} of {info.height}x{info.width}")
    profile = geotiff_profile(info, count=array.shape[0], dtype=array.dtype, nodata=nodata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array)
    os.replace(tmp, path)
    return path
