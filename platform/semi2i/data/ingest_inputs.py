"""What ingest learns from the input files' headers alone, before a pixel is read: the paths (globs, lists,
object-store URLs), the image/label pairing, class names, each raster's shape/CRS/dtype/label kind and the
checks across a city. :mod:`semi2i.preflight` runs the same checks before Ray starts.
"""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from semi2i import io_paths

from .palette import Palette, PaletteError


class IngestError(ValueError):
    """Bad input: the message names the file and the problem in one line."""


@dataclass
class RasterSource:
    """One input raster (and its label) as its headers describe it."""

    image: Path
    label: Path | None
    height: int = 0
    width: int = 0
    count: int = 0
    dtype: str = ""
    crs: CRS | None = None
    transform: rasterio.Affine = field(default_factory=rasterio.Affine.identity)
    nodata: float | None = None
    band_names: list[str] = field(default_factory=list)
    driver: str = ""
    label_mode: str = ""  # "index", "rgb" or "colour-table"
    label_colormap: dict | None = None
    label_nodata: float | None = None


def expand_paths(spec: str | os.PathLike | Sequence[str | os.PathLike] | None, what: str) -> list[Path]:
    """A glob, a path, or a list of either -> sorted existing paths; an empty result is an error."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if io_paths.is_url(text):  # s3://, gs://, az://, https://: listed by fsspec, read by GDAL
            try:
                paths.extend(io_paths.as_path(u) for u in io_paths.expand(text))
            except FileNotFoundError:
                kind = "no {what} objects match this pattern" if io_paths.GLOB_MAGIC.search(text) else "{what} object not found"
                raise IngestError(f"{text}: {kind.format(what=what)}") from None
            except RuntimeError as exc:
                raise IngestError(f"{text}: {exc}") from None
            continue
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise IngestError(f"{text}: no {what} files match this pattern")
            paths.extend(Path(m) for m in matches)
        else:
            if not Path(text).exists():
                raise IngestError(f"{text}: {what} file not found")
            paths.append(Path(text))
    if not paths:
        raise IngestError(f"no {what} files given")
    return paths


def pair_images_labels(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path | None]]:
    """Pair by matching file stems when every image has exactly one namesake label, else by sorted order."""
    if not labels:
        return [(p, None) for p in images]
    by_stem = {}
    for label in labels:
        by_stem.setdefault(label.stem, []).append(label)
    if all(len(by_stem.get(img.stem, [])) == 1 for img in images) and len(images) == len(labels):
        return [(img, by_stem[img.stem][0]) for img in images]
    if len(images) != len(labels):
        raise IngestError(
            f"{images[0].parent}: {len(images)} images but {len(labels)} labels, and their names do not match one to one"
        )
    return list(zip(images, labels))


def load_palette(palette: str | Path | None, ignore_index: int) -> Palette | None:
    if palette is None:
        return None
    try:
        return Palette.load(palette, ignore_index)
    except PaletteError as exc:
        raise IngestError(str(exc)) from None


def load_class_names(classes: str | Path | Sequence[str] | None) -> list[str]:
    if classes is None:
        return []
    if isinstance(classes, (str, os.PathLike)):
        path = io_paths.as_path(classes)
        try:
            spec = json.loads(io_paths.read_text(path))
            entries = sorted(spec["classes"], key=lambda c: int(c["index"]))
        except FileNotFoundError:
            raise IngestError(f"{path}: classes file not found") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IngestError(f"{path}: expected {{'classes': [{{index, name}}]}} ({exc!r})") from None
        if [int(c["index"]) for c in entries] != list(range(len(entries))):
            raise IngestError(f"{path}: class indices must be 0..{len(entries) - 1}")
        return [str(c["name"]) for c in entries]
    return [str(c) for c in classes]


def open_raster(path: Path, role: str) -> rasterio.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(io_paths.gdal_path(path))
    except RasterioIOError as exc:
        raise IngestError(f"{path}: cannot read {role} raster ({str(exc).splitlines()[0]})") from None


def band_names_of(src: rasterio.DatasetReader) -> list[str]:
    names = []
    for i, (desc, interp) in enumerate(zip(src.descriptions, src.colorinterp), start=1):
        if desc:
            names.append(desc)
        elif interp.name in {"red", "green", "blue", "alpha"}:
            names.append(interp.name)
        else:
            names.append(f"b{i}")
    return names if len(set(names)) == len(names) else [f"b{i}" for i in range(1, len(names) + 1)]


def inspect_raster(image: Path, label: Path | None, pal: Palette | None, nodata: float | None) -> RasterSource:
    src = RasterSource(image, label)
    with open_raster(image, "image") as ds:
        src.height, src.width, src.count, src.dtype = ds.height, ds.width, ds.count, ds.dtypes[0]
        if len(set(ds.dtypes)) != 1:
            raise IngestError(f"{image}: bands have different dtypes {ds.dtypes}")
        src.crs, src.transform, src.driver = ds.crs, ds.transform, ds.driver
        src.nodata = nodata if nodata is not None else ds.nodata
        src.band_names = band_names_of(ds)
    if label is None:
        return src
    with open_raster(label, "label") as ds:
        if (ds.height, ds.width) != (src.height, src.width):
            raise IngestError(f"{label}: label is {ds.height}x{ds.width} but image {image.name} is {src.height}x{src.width}")
        if ds.crs is not None and ds.crs != src.crs:
            raise IngestError(f"{label}: label CRS {ds.crs} differs from image CRS {src.crs} ({image.name})")
        if ds.crs is not None and not ds.transform.almost_equals(src.transform):
            raise IngestError(f"{label}: label transform {tuple(ds.transform)[:6]} differs from image transform {tuple(src.transform)[:6]}")
        colour_table = ds.count == 1 and ds.colorinterp[0].name == "palette"
        if pal is None:
            if ds.count != 1:
                raise IngestError(f"{label}: a class-index label must have 1 band, found {ds.count} (colour masks need --palette)")
            src.label_mode = "index"
            src.label_nodata = ds.nodata
        elif colour_table:
            src.label_mode, src.label_colormap = "colour-table", ds.colormap(1)
        elif ds.count in (3, 4) and ds.dtypes[0] == "uint8":
            src.label_mode = "rgb"
        else:
            raise IngestError(f"{label}: a colour mask must be 8-bit RGB(A) or paletted, found {ds.count} band(s) of {ds.dtypes[0]}")
    return src


def check_city(sources: list[RasterSource], min_size: int) -> None:
    first = sources[0]
    for s in sources:
        if s.count != first.count:
            raise IngestError(f"{s.image}: has {s.count} bands but {first.image.name} has {first.count}; one city needs one band count")
        if s.dtype != first.dtype:
            raise IngestError(f"{s.image}: dtype {s.dtype} differs from {first.image.name} ({first.dtype})")
        if s.height < min_size or s.width < min_size:
            raise IngestError(f"{s.image}: raster is {s.height}x{s.width}, smaller than one {min_size}x{min_size} patch")
        if (s.label is None) != (first.label is None):
            raise IngestError(f"{s.image}: some rasters have labels and some do not")


def raster_ids(paths: list[Path]) -> list[str]:
    ids, seen = [], {}
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", p.stem) or "raster"
        if base in seen or base.startswith("."):
            parent = re.sub(r"[^A-Za-z0-9_.-]", "_", p.parent.parent.name or p.parent.name)
            base = f"{parent}_{base}".lstrip(".")
        n, rid = 1, base
        while rid in seen:
            n, rid = n + 1, f"{base}_{n}"
        seen[rid] = True
        ids.append(rid)
    return ids
