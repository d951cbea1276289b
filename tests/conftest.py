"""Shared fixtures: tiny rasters written on the fly, the real data folder, and one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

UTM40 = CRS.from_epsg(32640)


def write_raster(path: Path, array: np.ndarray, *, crs=UTM40, transform=None, nodata=None, driver="GTiff", colormap=None) -> Path:
    """Write (bands, H, W) or (H, W) as a raster; the default grid is 0.5 m UTM 40N."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    if transform is None and crs is not None:
        transform = from_origin(326000.0, 2790000.0, 0.5, 0.5)
    profile = dict(driver=driver, height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype=array.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        if colormap is not None:
            dst.write_colormap(1, colormap)
    return path


@pytest.fixture
def write():
    return write_raster


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (it lives beside the repo as ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs; starting Ray costs seconds on 2 cores)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
