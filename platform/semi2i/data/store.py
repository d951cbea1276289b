"""A city store: one Zarr store per city, holding its rasters, labels, georeferencing and statistics.

Layout (zarr v3)::

    city.zarr/                      root attrs["semi2i"]: name, bands, classes, band stats, raster index
      rasters/<raster id>/          an xarray Dataset written with rioxarray georeferencing
        image   (band, y, x)        the source pixels, unchanged dtype, attrs nodata
        label   (y, x) uint8        class indices, ``ignore_index`` where unlabeled or nodata (optional)
        spatial_ref                 CRS + GeoTransform (CF grid mapping)

Open datasets with :meth:`CityStore.dataset` (it passes ``decode_coords="all"`` and
``mask_and_scale=False``, without which zarr 3 loses the CRS and the dtypes). Patch readers use
:meth:`CityStore.read_window`, which goes straight to the zarr arrays (no xarray overhead per patch).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS

from .normalize import BandStats

FORMAT_NAME = "semi2i-city"
FORMAT_VERSION = 1
ATTRS_KEY = "semi2i"


class StoreError(ValueError):
    """A path that is not a readable city store."""


@dataclass(frozen=True)
class RasterInfo:
    """One raster of a city: its grid, georeferencing and where it came from."""

    id: str
    height: int
    width: int
    crs: CRS | None
    transform: Affine
    source_image: str
    source_label: str | None
    valid_pixels: int

    @classmethod
    def from_attrs(cls, attrs: dict) -> "RasterInfo":
        return cls(
            id=attrs["id"],
            height=int(attrs["height"]),
            width=int(attrs["width"]),
            crs=CRS.from_wkt(attrs["crs_wkt"]) if attrs.get("crs_wkt") else None,
            transform=Affine(*attrs["transform"][:6]),
            source_image=attrs["source_image"],
            source_label=attrs.get("source_label"),
            valid_pixels=int(attrs.get("valid_pixels", attrs["height"] * attrs["width"])),
        )

    def to_attrs(self) -> dict:
        return {
            "id": self.id,
            "height": self.height,
            "width": self.width,
            "crs_wkt": self.crs.to_wkt() if self.crs else None,
            "transform": list(self.transform)[:6],
            "source_image": self.source_image,
            "source_label": self.source_label,
            "valid_pixels": self.valid_pixels,
        }


class CityStore:
    """Read access to a city store written by :func:`semi2i.data.ingest.ingest_city`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: city store not found")
        try:
            root = zarr.open_group(str(self.path), mode="r")
            meta = dict(root.attrs[ATTRS_KEY])
        except Exception as exc:  # zarr raises several types for "not a store"
            raise StoreError(f"{self.path}: not a city store ({type(exc).__name__}: {exc})") from None
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{self.path}: unsupported store format {meta.get('format')} v{meta.get('format_version')}")
        self._root = root
        self.meta = meta
        self.name: str = meta["name"]
        self.band_names: list[str] = list(meta["band_names"])
        self.dtype = np.dtype(meta["dtype"])
        self.nodata: float | None = meta["nodata"]
        self.class_names: list[str] = list(meta["class_names"])
        self.ignore_index: int = int(meta["ignore_index"])
        self.has_labels: bool = bool(meta["has_labels"])
        self.band_stats = BandStats.from_attrs(meta["band_stats"])
        self.rasters: list[RasterInfo] = [RasterInfo.from_attrs(r) for r in meta["rasters"]]
        self._by_id = {r.id: r for r in self.rasters}

    @property
    def num_bands(self) -> int:
        return len(self.band_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def raster(self, raster_id: str) -> RasterInfo:
        try:
            return self._by_id[raster_id]
        except KeyError:
            raise StoreError(f"{self.path}: no raster {raster_id!r} (has {sorted(self._by_id)})") from None

    def dataset(self, raster_id: str) -> xr.Dataset:
        """The raster as a lazy (dask) xarray Dataset with its CRS and transform decoded."""
        self.raster(raster_id)
        return xr.open_zarr(
            str(self.path), group=f"rasters/{raster_id}", decode_coords="all", mask_and_scale=False, consolidated=False
        )

    @functools.cache
    def _array(self, raster_id: str, name: str) -> zarr.Array:
        return self._root[f"rasters/{raster_id}/{name}"]

    def read_window(self, raster_id: str, y: int, x: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw image pixels (bands, h, w) and labels (h, w) or None, straight from zarr."""
        info = self.raster(raster_id)
        if y < 0 or x < 0 or y + height > info.height or x + width > info.width:
            raise ValueError(f"window {(y, x, height, width)} outside raster {raster_id} of {info.height}x{info.width}")
        image = self._array(raster_id, "image")[:, y : y + height, x : x + width]
        label = self._array(raster_id, "label")[y : y + height, x : x + width] if self.has_labels else None
        return np.asarray(image), None if label is None else np.asarray(label)

    def valid_mask(self, image: np.ndarray) -> np.ndarray:
        """(bands, h, w) -> (h, w) bool: a pixel is nodata when every band is nodata, or any band is NaN."""
        return valid_mask(image, self.nodata)

    def __repr__(self) -> str:
        return f"CityStore({str(self.path)!r}, name={self.name!r}, rasters={len(self.rasters)}, bands={self.band_names})"


def valid_mask(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """(bands, h, w) -> (h, w) bool of pixels that carry data."""
    valid = np.ones(image.shape[1:], dtype=bool)
    if np.issubdtype(image.dtype, np.floating):
        valid &= ~np.isnan(image).any(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid &= ~(image == np.asarray(nodata).astype(image.dtype)).all(axis=0)
    return valid


def open_store(path: str) -> CityStore:
    """A process-wide cache of opened stores (Ray tasks and actors read many windows from few stores).

    Keyed by the root metadata's mtime too, so a store re-ingested with ``--overwrite`` is re-opened
    instead of served stale from a long-lived worker."""
    try:
        stamp = (Path(path) / "zarr.json").stat().st_mtime_ns
    except OSError:
        stamp = None
    return _open_store_cached(str(path), stamp)


@functools.lru_cache(maxsize=64)
def _open_store_cached(path: str, stamp: int | None) -> CityStore:
    return CityStore(path)
