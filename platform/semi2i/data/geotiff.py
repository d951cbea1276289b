"""Write arrays on a city raster's grid as tiled, compressed GeoTIFFs, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio

from .store import RasterInfo


def write_geotiff(path: str | Path, array: np.ndarray, info: RasterInfo, nodata: float | None = None) -> Path:
    """(bands, H, W) or (H, W) -> GeoTIFF with the raster's CRS and transform (temp file, then rename)."""
    path = Path(path)
    array = array[None] if array.ndim == 2 else array
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype=array.dtype,
                   transform=info.transform, compress="deflate")
    if min(array.shape[1:]) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if info.crs is not None:
        profile["crs"] = info.crs
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array)
    os.replace(tmp, path)
    return path
