"""Writing demo cities: georeferenced GeoTIFFs (UTM CRS, 0.5 m pixels) with label masks and a manifest,
atomically and idempotently: the two-city pair (:func:`make_demo_cities`) and the multi-city demo
(:func:`make_multicity_demo`)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from semi2i.demo.render import render_scene
from semi2i.demo.scene import CLASS_NAMES, CLASS_RGB, IGNORE_INDEX, IMAGE_NODATA, generate_scene
from semi2i.demo.sensors import get_sensor

# --- georeferencing -----------------------------------------------------------------------------

#: UTM zone 40N (Dubai), a real projected CRS in metres.
DEMO_CRS = CRS.from_epsg(32640)
PIXEL_SIZE_M = 0.5
#: Upper-left corners of the two demo cities (a few km apart, inside zone 40N near Dubai).
_CITY_ORIGINS = {"demo_source": (320_000.0, 2_790_000.0), "demo_target": (331_000.0, 2_781_000.0)}


# --- writing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CityFiles:
    """The rasters of one demo city, as written (images and labels pair up by position)."""

    name: str
    images: list[Path]
    labels: list[Path]
    classes: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    sensor: str = ""
    band_names: tuple[str, ...] = ()


#: The two demo cities: (name, sensor name, whether ``target_nir`` applies).
DEMO_CITIES: tuple[tuple[str, str, bool], ...] = (
    ("demo_source", "sensor_a", False),
    ("demo_target", "sensor_b", True),
)
_MANIFEST = "demo_manifest.json"
#: Part of the manifest: bump when the generator's pixels change, so old demo folders get redrawn.
_GENERATOR_VERSION = 1


def raster_transform(city: str, index: int, size: tuple[int, int]) -> Affine:
    """0.5 m north-up grid of raster ``index`` of ``city``: rasters sit side by side, 100 m apart."""
    default = (300_000.0 + 2_000.0 * (zlib.crc32(city.encode()) % 20), 2_770_000.0)  # stable across runs
    x0, y0 = _CITY_ORIGINS.get(city, default)
    _, w = size
    step = w * PIXEL_SIZE_M + 100.0
    return Affine(PIXEL_SIZE_M, 0.0, x0 + index * step, 0.0, -PIXEL_SIZE_M, y0)


def _block_size(n: int) -> int | None:
    """GeoTIFF tile edge: 256, or the largest multiple of 16 that fits a small raster."""
    return min(256, (n // 16) * 16) if n >= 16 else None


def _write_tif_atomic(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine,
    nodata: int,
    descriptions: tuple[str, ...],
    tags: dict[str, str],
    colormap: dict[int, tuple[int, ...]] | None = None,
) -> None:
    """Write a tiled, compressed uint8 GeoTIFF to a temp file next to ``path``, then rename over it.

    Readers never see a half-written raster, and an interrupted run leaves no partial file behind.
    """
    bands, h, w = data.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=bands, dtype="uint8", crs=DEMO_CRS,
        transform=transform, nodata=nodata, compress="deflate", predictor=2,
    )
    bx, by = _block_size(w), _block_size(h)
    if bx and by:
        profile.update(tiled=True, blockxsize=bx, blockysize=by)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
            dst.update_tags(**tags)
            if colormap is not None:
                dst.write_colormap(1, colormap)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def classes_document() -> dict:
    """The content of ``classes.json``: class indices, names, preview colours, the ignore index."""
    return {
        "classes": [{"index": i, "name": n, "rgb": list(CLASS_RGB[i])} for i, n in enumerate(CLASS_NAMES)],
        "ignore_index": IGNORE_INDEX,
    }


def make_city_pair(
    size: int | tuple[int, int] = 512,
    *,
    seed: int = 0,
    index: int = 0,
    target_nir: bool = False,
    nodata_corner: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """In memory: raster ``index`` of each demo city, as {city: (image, labels)}.

    The cities draw from independent seed streams, so they show different places of the same kind
    of city, each through its own sensor.
    """
    out = {}
    for city_id, (city, sensor_name, nir_applies) in enumerate(DEMO_CITIES):
        scene_seq, render_seq = np.random.SeedSequence([seed, city_id, index]).spawn(2)
        labels = generate_scene(size, scene_seq, nodata_corner=nodata_corner)
        sensor = get_sensor(sensor_name, nir=target_nir and nir_applies)
        out[city] = (render_scene(labels, sensor, np.random.default_rng(render_seq)), labels)
    return out


def make_demo_cities(
    out_dir: str | os.PathLike,
    *,
    size: int | tuple[int, int] = 512,
    rasters_per_city: int = 2,
    seed: int = 0,
    target_nir: bool = False,
    nodata_corner: bool = False,
) -> dict[str, CityFiles]:
    """Write the demo source ("demo_source", sensor_a) and target ("demo_target", sensor_b) cities.

    Layout: ``out_dir/<city>/{images,labels}/<city>_<i>.tif`` plus ``out_dir/classes.json``.
    Idempotent: a re-run with the same arguments finds the manifest and the files and writes nothing;
    other arguments rewrite the rasters (atomically) and remove stale ones of the same cities.
    """
    if rasters_per_city < 1:
        raise ValueError(f"rasters_per_city must be >= 1, got {rasters_per_city}")
    out = Path(out_dir)
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    params = {
        "size": list(shape),
        "rasters_per_city": rasters_per_city,
        "seed": seed,
        "target_nir": target_nir,
        "nodata_corner": nodata_corner,
        "version": _GENERATOR_VERSION,
    }

    cities: dict[str, CityFiles] = {}
    for city, sensor_name, nir_applies in DEMO_CITIES:
        sensor = get_sensor(sensor_name, nir=target_nir and nir_applies)
        names = [f"{city}_{i}.tif" for i in range(rasters_per_city)]
        cities[city] = CityFiles(
            name=city,
            images=[out / city / "images" / n for n in names],
            labels=[out / city / "labels" / n for n in names],
            sensor=sensor.name,
            band_names=sensor.bands,
        )

    manifest_path = out / _MANIFEST
    if manifest_path.exists() and (out / "classes.json").exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            previous = None
        all_files = [p for c in cities.values() for p in (*c.images, *c.labels)]
        if previous == params and all(p.exists() for p in all_files):
            return cities

    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # invalid until this run completes
    _write_text_atomic(out / "classes.json", json.dumps(classes_document(), indent=2) + "\n")
    for i in range(rasters_per_city):
        pair = make_city_pair(shape, seed=seed, index=i, target_nir=target_nir, nodata_corner=nodata_corner)
        for city, (image, labels) in pair.items():
            files = cities[city]
            transform = raster_transform(city, i, shape)
            _write_tif_atomic(
                files.images[i], image, transform=transform, nodata=IMAGE_NODATA,
                descriptions=files.band_names,
                tags={"sensor": files.sensor, "city": city, "synthetic": "true"},
            )
            _write_tif_atomic(
                files.labels[i], labels[None], transform=transform, nodata=IGNORE_INDEX,
                descriptions=("class",),
                tags={"classes": json.dumps(list(CLASS_NAMES)), "city": city},
                colormap={k: (*rgb, 255) for k, rgb in enumerate(CLASS_RGB)},
            )
    for files in cities.values():  # rasters of an earlier, larger run would be picked up by globs
        pattern = re.compile(rf"^{re.escape(files.name)}_(\d+)\.tif$")
        for folder in (files.images[0].parent, files.labels[0].parent):
            for p in folder.iterdir():
                m = pattern.match(p.name)
                if m and int(m.group(1)) >= rasters_per_city:
                    p.unlink()
    _write_text_atomic(manifest_path, json.dumps(params, indent=2) + "\n")
    return cities


#: The three cities of the multi-city demo (``make_multicity_demo``): (name, sensor name).
MULTICITY_DEMO: tuple[tuple[str, str], ...] = (("city_a", "sensor_a"), ("city_b", "sensor_b"), ("city_c", "sensor_c"))


def make_multicity_demo(
    out_dir: str | os.PathLike,
    *,
    size: int | tuple[int, int] = 512,
    rasters_per_city: int = 2,
    seed: int = 0,
) -> dict[str, CityFiles]:
    """Write the three multi-city demo cities (``city_a``/``city_b``/``city_c`` through sensors A, B, C)
    as ``out_dir/<city>/{images,labels}/<city>_<i>.tif`` plus ``out_dir/classes.json``.

    Separate from :func:`make_demo_cities` (whose two cities stay exactly as they are). Each city draws
    its scenes from its own seed stream. Idempotent like :func:`make_demo_cities` (a manifest of the
    arguments; the rasters are written atomically).
    """
    if rasters_per_city < 1:
        raise ValueError(f"rasters_per_city must be >= 1, got {rasters_per_city}")
    out = Path(out_dir)
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    params = {"size": list(shape), "rasters_per_city": rasters_per_city, "seed": seed, "version": _GENERATOR_VERSION,
              "cities": [list(c) for c in MULTICITY_DEMO]}
    cities: dict[str, CityFiles] = {}
    for city, sensor_name in MULTICITY_DEMO:
        sensor = get_sensor(sensor_name)
        names = [f"{city}_{i}.tif" for i in range(rasters_per_city)]
        cities[city] = CityFiles(name=city, images=[out / city / "images" / n for n in names],
                                 labels=[out / city / "labels" / n for n in names], sensor=sensor.name,
                                 band_names=sensor.bands)
    manifest_path = out / "multicity_manifest.json"
    all_files = [p for c in cities.values() for p in (*c.images, *c.labels)]
    if manifest_path.exists() and (out / "classes.json").exists() and all(p.exists() for p in all_files):
        try:
            if json.loads(manifest_path.read_text()) == params:
                return cities
        except (OSError, ValueError):
            pass
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    _write_text_atomic(out / "classes.json", json.dumps(classes_document(), indent=2) + "\n")
    for city_id, (city, sensor_name) in enumerate(MULTICITY_DEMO):
        files, sensor = cities[city], get_sensor(sensor_name)
        for i in range(rasters_per_city):
            scene_seq, render_seq = np.random.SeedSequence([seed, 100 + city_id, i]).spawn(2)
            labels = generate_scene(shape, scene_seq)
            image = render_scene(labels, sensor, np.random.default_rng(render_seq))
            transform = raster_transform(city, i, shape)
            _write_tif_atomic(files.images[i], image, transform=transform, nodata=IMAGE_NODATA, descriptions=files.band_names,
                              tags={"sensor": files.sensor, "city": city, "synthetic": "true"})
            _write_tif_atomic(files.labels[i], labels[None], transform=transform, nodata=IGNORE_INDEX, descriptions=("class",),
                              tags={"classes": json.dumps(list(CLASS_NAMES)), "city": city},
                              colormap={k: (*rgb, 255) for k, rgb in enumerate(CLASS_RGB)})
    _write_text_atomic(manifest_path, json.dumps(params, indent=2) + "\n")
    return cities
