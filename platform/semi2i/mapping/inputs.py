"""A mapping job's input: expand and check it before anything is written, fingerprint it (so a resumed
job never maps a stale copy), compare its grid with the model's and, on request, warp it to that grid.

The checks here read headers only; the pixels are read by the tasks that map them (:mod:`.rasters`).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from semi2i import io_paths
from semi2i.data.store import CityStore, StoreError

log = logging.getLogger(__name__)

#: bytes hashed at each end of an input file (catches a same-size, same-mtime replacement, e.g. cp -p)
_HASH_BYTES = 64 * 1024
#: relative resolution difference above which the model's and the input's grids count as different
_RES_TOLERANCE = 0.02


class MappingError(ValueError):
    """Bad input to a mapping job (one line, names the file)."""


def input_paths(spec: str | Path | list) -> tuple[Path | None, list[str]]:
    """(store, []) for one city store, else (None, raster paths) with globs expanded; checked to exist."""
    specs = [str(s) for s in (spec if isinstance(spec, (list, tuple)) else [spec])]
    if any(io_paths.is_url(s) for s in specs):  # object-store rasters: listed by fsspec, read by GDAL at ingest
        try:
            return None, io_paths.expand(specs)
        except (FileNotFoundError, RuntimeError) as exc:
            raise MappingError(f"{specs[0]}: {exc}") from None
    if len(specs) == 1 and (Path(specs[0]) / "zarr.json").exists():
        try:
            CityStore(specs[0])
        except StoreError as exc:
            raise MappingError(str(exc)) from None
        return Path(specs[0]), []
    paths = []
    for s in specs:
        matches = sorted(glob.glob(s)) if glob.has_magic(s) else [s]
        if not matches:
            raise MappingError(f"{s}: no raster matches")
        paths.extend(matches)
    for p in paths:
        if not Path(p).is_file():
            raise MappingError(f"{p}: input raster not found" + (" (a folder: give a glob such as DIR/*.tif)"
                                                                 if Path(p).is_dir() else ""))
    return None, paths


def fingerprints(store: Path | None, paths: list[str]) -> list[dict]:
    """What identifies the input: per raster file its path, size, mtime and a hash of its first and last
    64 KiB; for a city store its path and a hash of its root metadata (rewritten by every ingest)."""
    if store is not None:
        return [{"path": str(store.resolve()), "sha1": hashlib.sha1((store / "zarr.json").read_bytes()).hexdigest()}]
    return [_file_fingerprint(p) for p in paths]


def _file_fingerprint(path: str) -> dict:
    if io_paths.is_url(path):
        try:
            fs, root = io_paths.filesystem(path)
            info = fs.info(root)
            return {"path": path, "size": info.get("size"), "etag": str(info.get("ETag") or info.get("etag") or
                                                                       info.get("LastModified") or info.get("mtime") or "")}
        except Exception:  # noqa: BLE001 - a listing backend without info(): the path alone
            return {"path": path}
    p = Path(path)
    st = p.stat()
    digest = hashlib.sha1()
    with open(p, "rb") as f:
        digest.update(f.read(_HASH_BYTES))
        if st.st_size > 2 * _HASH_BYTES:
            f.seek(-_HASH_BYTES, os.SEEK_END)
            digest.update(f.read(_HASH_BYTES))
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha1": digest.hexdigest()}


def describe_change(old: list[dict] | None, new: list[dict]) -> str:
    """One phrase saying how the recorded input ``old`` differs from ``new``."""
    if not old:
        return "its input is not recorded"
    old_paths, new_paths = [o["path"] for o in old], [n["path"] for n in new]
    if old_paths != new_paths:
        gone = [p for p in old_paths if p not in new_paths]
        shown = Path(gone[0]).name if gone else Path(old_paths[0]).name
        more = f" and {len(old_paths) - 1} more" if len(old_paths) > 1 else ""
        return f"it was started for other input ({shown}{more})"
    for o, n in zip(old, new):
        if o != n:
            return f"{n['path']} changed since it was started (size, time or content)"
    return "its input settings differ"


def _open_header(path: str) -> rasterio.DatasetReader:
    try:
        return rasterio.open(io_paths.gdal_path(path))
    except (RasterioError, OSError) as exc:
        raise MappingError(f"{path}: cannot read raster ({str(exc).splitlines()[0]})") from None


def check_bands(store: Path | None, paths: list[str], bands: int, model: Path) -> None:
    """Every input raster has the band count the model takes (named in the user's terms, before the ingest)."""
    if store is not None:
        found = CityStore(store).num_bands
        if found != bands:
            raise MappingError(f"{store}: {found} bands, but {model} expects {bands}")
        return
    for p in paths:
        with _open_header(p) as ds:
            if ds.count != bands:
                raise MappingError(f"{p}: {ds.count} band{'s' if ds.count != 1 else ''}, but {model} expects {bands}")


def _grids(store: Path | None, paths: list[str]) -> list[tuple[str, CRS | None, tuple[float, float]]]:
    if store is not None:
        return [(f"{store}:{r.id}", r.crs, (abs(r.transform.a), abs(r.transform.e))) for r in CityStore(store).rasters]
    out = []
    for p in paths:
        with _open_header(p) as ds:
            out.append((p, ds.crs, (abs(ds.transform.a), abs(ds.transform.e))))
    return out


def model_grid(state: dict) -> tuple[CRS, tuple[float, float]] | None:
    """The CRS and pixel size of the imagery the U-net was trained on (recorded since issue 20), or None."""
    grid = state.get("grid")
    if not grid or not grid.get("crs_wkt"):
        return None
    return CRS.from_wkt(grid["crs_wkt"]), (float(grid["resolution"][0]), float(grid["resolution"][1]))


def _describe(crs: CRS | None, res: tuple[float, float]) -> str:
    name = crs.to_string() if crs is not None else "no CRS"
    return f"{name} at {res[0]:g} x {res[1]:g}" + (" m" if crs is not None and crs.linear_units in ("metre", "meter") else "")


def grid_mismatches(store: Path | None, paths: list[str], grid: tuple[CRS, tuple[float, float]] | None,
                    model: Path, warn: bool = True) -> list[str]:
    """Inputs whose CRS or pixel size differ from the model's training imagery; one warning line each
    (a U-net applied at another resolution sees objects at another size)."""
    if grid is None:
        return []
    crs, res = grid
    found = []
    for name, in_crs, in_res in _grids(store, paths):
        if in_crs is None:
            continue  # plain JPEG/PNG: no grid to compare
        same_res = all(abs(a - b) <= _RES_TOLERANCE * b for a, b in zip(in_res, res))
        if in_crs == crs and same_res:
            continue
        found.append(name)
        if warn:
            log.warning("%s: %s, but %s was trained on %s; the map may be poor (--resample warps the input to the "
                        "model's grid)", name, _describe(in_crs, in_res), model.name, _describe(crs, res))
    return found


def warp_to_grid(paths: list[str], grid: tuple[CRS, tuple[float, float]], folder: Path) -> list[str]:
    """Warped VRTs (``folder/<name>.vrt``) of ``paths`` in the model's CRS at its pixel size (bilinear;
    pixels outside the input's footprint are nodata: the input's own, else NaN for floats, 0 otherwise)."""
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform

    crs, res = grid
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        with _open_header(p) as src:
            if src.crs is None:
                raise MappingError(f"{p}: has no CRS, so it cannot be resampled to the model's grid")
            transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds,
                                                                   resolution=res)
            nodata = src.nodata if src.nodata is not None else (float("nan") if src.dtypes[0].startswith("float") else 0)
            target = folder / f"{Path(p).stem}.vrt"
            with WarpedVRT(src, crs=crs, transform=transform, width=width, height=height, nodata=nodata,
                           resampling=Resampling.bilinear) as vrt:
                rio_copy(vrt, str(target), driver="VRT")
        log.info("%s: resampled to %s (%dx%d px)", p, _describe(crs, res), width, height)
        out.append(str(target))
    return out
