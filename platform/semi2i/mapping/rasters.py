"""A mapping job's input read straight from its rasters (GeoTIFF, COG, VRT; files or object-store URLs).

A region is mapped where it lies: each chunk reads the windows it needs from the input files (GDAL's
block cache and the mapping window cache keep re-reads cheap), so no copy of the region is written first
and the driver reads no pixels. :class:`RasterInput` offers the part of
:class:`~semi2i.data.store.CityStore` that mapping reads (``rasters``, ``num_bands``, ``nodata``,
``read_window``, ``valid_mask``), so a city store and a set of rasters are mapped by the same code.

The header checks are ingest's (one band count and dtype for all rasters, readable headers); the pixel
checks ingest makes on its one pass happen per window here: a window with +-inf pixels is refused
(naming the file) instead of producing a silently wrong map. Rasters of whole-file formats (JPEG, PNG:
no efficient windowed access, small by nature) are decoded once per process and cached.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from semi2i import io_paths
from semi2i.data.ingest import WHOLE_FILE_DRIVERS
from semi2i.data.ingest_inputs import IngestError, check_city, expand_paths, inspect_raster, raster_ids
from semi2i.data.store import CHUNK_CACHE, CityStore, RasterInfo, valid_mask

from .inputs import MappingError


class RasterInput:
    """The rasters ``paths`` (already expanded and fingerprinted by the job), read window by window."""

    def __init__(self, paths: list[str]):
        try:
            sources = [inspect_raster(p, None, None, None) for p in expand_paths(paths, "input")]
            check_city(sources, min_size=1)
        except IngestError as exc:
            raise MappingError(str(exc)) from None
        first = sources[0]
        self.name, self.path = "region", None
        self.num_bands, self.nodata = first.count, first.nodata
        ids = raster_ids([s.image for s in sources])
        self.rasters = [RasterInfo(rid, s.height, s.width, s.crs, s.transform, str(s.image), None, s.height * s.width)
                        for rid, s in zip(ids, sources)]
        self._files = {rid: io_paths.gdal_path(s.image) for rid, s in zip(ids, sources)}
        self._whole = {rid for rid, s in zip(ids, sources) if s.driver in WHOLE_FILE_DRIVERS}
        self._by_id = {r.id: r for r in self.rasters}
        self._local = threading.local()  # rasterio datasets are not thread-safe: one handle per thread

    def raster(self, raster_id: str) -> RasterInfo:
        return self._by_id[raster_id]

    def read_window(self, raster_id: str, y: int, x: int, height: int, width: int) -> tuple[np.ndarray, None]:
        """Raw pixels (bands, h, w) of a window inside the raster (no labels: ``None``)."""
        info = self.raster(raster_id)
        if y < 0 or x < 0 or y + height > info.height or x + width > info.width:
            raise ValueError(f"window {(y, x, height, width)} outside raster {raster_id} of {info.height}x{info.width}")
        try:
            if raster_id in self._whole:
                whole = CHUNK_CACHE.get(("raster-input", self._files[raster_id]), lambda: self._dataset(raster_id).read())
                pixels = whole[:, y : y + height, x : x + width].copy()
            else:
                pixels = self._dataset(raster_id).read(window=Window(x, y, width, height))
        except RasterioError as exc:  # a truncated or corrupt file: its header read, its pixels do not
            raise MappingError(f"{info.source_image}: cannot read the pixels near row {y}, column {x} "
                               f"({str(exc).splitlines()[0][:120]}); the file may be truncated or corrupt") from None
        if pixels.dtype.kind == "f" and np.isinf(pixels).any():
            raise MappingError(f"{info.source_image}: +-inf pixels near row {y}, column {x} (mark them as NaN or the "
                               "nodata value; the map would be wrong there)")
        return pixels, None

    def valid_mask(self, image: np.ndarray) -> np.ndarray:
        return valid_mask(image, self.nodata)

    def _dataset(self, raster_id: str) -> rasterio.DatasetReader:
        handles = self._local.__dict__.setdefault("handles", {})
        if raster_id not in handles:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                handles[raster_id] = rasterio.open(self._files[raster_id])
        return handles[raster_id]

    def __getstate__(self) -> dict:  # open handles stay behind; each process opens its own
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _local=threading.local())


def open_input(spec: dict) -> CityStore | RasterInput:
    """A job's ``input``: ``{"store": path}`` (a city store) or ``{"rasters": [paths]}``."""
    if "store" in spec:
        from semi2i.data.store import open_store

        return open_store(spec["store"])
    return RasterInput(spec["rasters"])

