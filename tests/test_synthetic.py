"""Synthetic demo cities: valid labels, sensible scenes, real georeferencing, a real domain shift."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from semi2i.demo.cities import make_city_pair, make_demo_cities
from semi2i.demo.render import render_scene
from semi2i.demo.scene import CLASS_NAMES, IGNORE_INDEX, IMAGE_NODATA, VEGETATION, WATER, class_shares, generate_scene
from semi2i.demo.sensors import SENSOR_A, SENSOR_B, Sensor, get_sensor

VALID = set(range(len(CLASS_NAMES)))


# --- helpers: a nearest-class-mean per-pixel colour classifier ----------------------------------


def _pixels(image: np.ndarray) -> np.ndarray:
    return image.reshape(image.shape[0], -1).T.astype(np.float64)


def _fit_means(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x, y = _pixels(image), labels.ravel()
    return np.stack([x[y == c].mean(0) for c in range(len(CLASS_NAMES))])


def _predict(means: np.ndarray, image: np.ndarray) -> np.ndarray:
    x = _pixels(image)
    return ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)


def _accuracy_and_miou(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    y = labels.ravel()
    keep = y != IGNORE_INDEX
    n = len(CLASS_NAMES)
    cm = np.bincount(y[keep].astype(np.int64) * n + pred[keep], minlength=n * n).reshape(n, n)
    iou = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
    return float(np.diag(cm).sum() / cm.sum()), float(iou.mean())


def _standardise(image: np.ndarray) -> np.ndarray:
    """Per-band z-scores with the image's own statistics, as every pipeline stage normalises a city."""
    x = image.reshape(image.shape[0], -1).astype(np.float64)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return x.reshape(image.shape)


@pytest.fixture(scope="module")
def pair512():
    """The default-size source/target pair (raster 0), with NIR on the target."""
    return make_city_pair(512, seed=0, target_nir=True)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cities = make_demo_cities(out, size=288, rasters_per_city=2, seed=3, target_nir=True)
    return out, cities


# --- scenes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_are_class_indices_only(seed):
    labels = generate_scene(256, seed)
    assert labels.dtype == np.uint8 and labels.shape == (256, 256)
    assert set(np.unique(labels).tolist()) <= VALID


def test_nodata_corner_only_when_requested():
    labels = generate_scene(256, 0, nodata_corner=True)
    values = set(np.unique(labels).tolist())
    assert IGNORE_INDEX in values and values - {IGNORE_INDEX} <= VALID
    ignored = labels == IGNORE_INDEX
    assert 0.005 < ignored.mean() < 0.1
    assert ignored[0, 0] or ignored[0, -1] or ignored[-1, 0] or ignored[-1, -1]  # a corner, not a hole

    image = render_scene(labels, SENSOR_A, 0)
    assert (image[:, ignored] == IMAGE_NODATA).all()
    assert (image[:, ~ignored] != IMAGE_NODATA).all()  # 0 is unambiguous nodata


@pytest.mark.parametrize("seed", range(5))
def test_default_scene_has_every_class_in_sensible_shares(seed):
    shares = class_shares(generate_scene(512, seed))
    bounds = {
        "building": (0.04, 0.25),
        "road": (0.08, 0.22),
        "vegetation": (0.03, 0.30),
        "water": (0.02, 0.25),
        "land": (0.30, 0.70),
    }
    for name, (lo, hi) in bounds.items():
        assert lo <= shares[name] <= hi, (name, shares)


def test_odd_and_small_sizes():
    for shape in [(16, 16), (64, 200), (130, 70)]:
        labels = generate_scene(shape, 1, nodata_corner=True)
        assert labels.shape == shape
        image = render_scene(labels, SENSOR_B.with_nir(), 1)
        assert image.shape == (4, *shape) and image.dtype == np.uint8


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = generate_scene(256, 7), generate_scene(256, 7), generate_scene(256, 8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2
    np.testing.assert_array_equal(render_scene(a, SENSOR_B, 5), render_scene(b, SENSOR_B, 5))
    p, q = make_city_pair(128, seed=4), make_city_pair(128, seed=4)
    for city in p:
        np.testing.assert_array_equal(p[city][0], q[city][0])
        np.testing.assert_array_equal(p[city][1], q[city][1])
    # The two cities are different places.
    assert (p["demo_source"][1] != p["demo_target"][1]).mean() > 0.2


# --- sensors and the domain shift -----------------------------------------------------------------


def test_sensor_lookup_and_bands():
    assert get_sensor("sensor_a").bands == ("red", "green", "blue")
    assert get_sensor("sensor_b", nir=True).bands == ("red", "green", "blue", "nir")
    assert get_sensor("sensor_b", nir=True).with_nir(False) == SENSOR_B
    with pytest.raises(ValueError, match="unknown sensor"):
        get_sensor("sensor_z")
    with pytest.raises(ValueError, match="bands"):
        Sensor(name="bad", bands=("red", "swir"))


def test_sensors_differ_strongly_on_the_same_scene():
    labels = generate_scene(256, 0)
    a = render_scene(labels, SENSOR_A, 0).reshape(3, -1).mean(1)
    b = render_scene(labels, SENSOR_B, 0).reshape(3, -1).mean(1)
    assert np.abs(a - b).mean() > 40, (a, b)
    assert a.mean() > b.mean() + 30  # source bright, target dark


def test_cities_are_the_same_kind_of_city(pair512):
    src = class_shares(pair512["demo_source"][1])
    tgt = class_shares(pair512["demo_target"][1])
    for name in CLASS_NAMES:
        assert abs(src[name] - tgt[name]) < 0.12, (name, src, tgt)


def test_domain_shift_defeats_a_source_trained_colour_classifier(pair512):
    (src_img, src_lab), (tgt_img, tgt_lab) = pair512["demo_source"], pair512["demo_target"]
    tgt_rgb = tgt_img[:3]
    src_means, tgt_means = _fit_means(src_img, src_lab), _fit_means(tgt_rgb, tgt_lab)
    src_on_src, _ = _accuracy_and_miou(_predict(src_means, src_img), src_lab)
    src_on_tgt, _ = _accuracy_and_miou(_predict(src_means, tgt_rgb), tgt_lab)
    tgt_on_tgt, _ = _accuracy_and_miou(_predict(tgt_means, tgt_rgb), tgt_lab)
    assert src_on_src > 0.8
    assert src_on_src - src_on_tgt > 0.25, (src_on_src, src_on_tgt)
    assert tgt_on_tgt > 0.6 and tgt_on_tgt - src_on_tgt > 0.25, (tgt_on_tgt, src_on_tgt)

    # The shift survives per-band standardisation (what the U-net sees): not just gain and offset.
    zs, zt = _standardise(src_img), _standardise(tgt_rgb)
    _, z_src_on_tgt = _accuracy_and_miou(_predict(_fit_means(zs, src_lab), zt), tgt_lab)
    _, z_tgt_on_tgt = _accuracy_and_miou(_predict(_fit_means(zt, tgt_lab), zt), tgt_lab)
    assert z_tgt_on_tgt - z_src_on_tgt > 0.15, (z_tgt_on_tgt, z_src_on_tgt)


def test_nir_bright_for_vegetation_dark_for_water(pair512):
    image, labels = pair512["demo_target"]
    assert image.shape[0] == 4
    nir = image[3].astype(np.float64)
    veg, water = nir[labels == VEGETATION].mean(), nir[labels == WATER].mean()
    assert veg > water + 40, (veg, water)


# --- files ------------------------------------------------------------------------------------------


def test_geotiffs_read_back_georeferenced(demo_dir):
    out, cities = demo_dir
    assert set(cities) == {"demo_source", "demo_target"}
    doc = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in doc["classes"]] == list(CLASS_NAMES)
    assert [c["index"] for c in doc["classes"]] == [0, 1, 2, 3, 4] and doc["ignore_index"] == 255

    transforms = set()
    for name, files in cities.items():
        assert files.name == name and files.classes == list(CLASS_NAMES)
        assert len(files.images) == len(files.labels) == 2
        bands = 3 if name == "demo_source" else 4
        for img_path, lab_path in zip(files.images, files.labels):
            assert img_path == out / name / "images" / f"{img_path.stem}.tif"
            assert lab_path == out / name / "labels" / img_path.name
            with rasterio.open(img_path) as img, rasterio.open(lab_path) as lab:
                assert img.crs.to_epsg() == 32640 and lab.crs == img.crs
                assert img.transform.a == 0.5 and img.transform.e == -0.5
                assert lab.transform == img.transform and lab.shape == img.shape == (288, 288)
                assert img.count == bands and lab.count == 1
                assert img.dtypes == ("uint8",) * bands and lab.dtypes == ("uint8",)
                assert img.nodata == 0 and lab.nodata == 255
                assert img.descriptions == ("red", "green", "blue", "nir")[:bands]
                assert img.profile["compress"].lower() == "deflate" and img.profile["tiled"]
                assert img.block_shapes[0] == lab.block_shapes[0] == (256, 256)
                assert set(np.unique(lab.read(1)).tolist()) <= VALID
                transforms.add(tuple(img.transform))
    assert len(transforms) == 4  # every raster at its own place


def test_make_demo_cities_is_idempotent_and_atomic(tmp_path):
    first = make_demo_cities(tmp_path, size=64, rasters_per_city=2, seed=1)
    paths = [p for c in first.values() for p in (*c.images, *c.labels)]
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    with rasterio.open(first["demo_target"].images[0]) as src:
        before = src.read()

    again = make_demo_cities(tmp_path, size=64, rasters_per_city=2, seed=1)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps  # nothing rewritten

    # Other arguments rewrite the rasters and drop the ones that no longer belong.
    fewer = make_demo_cities(tmp_path, size=64, rasters_per_city=1, seed=2)
    assert not first["demo_target"].images[1].exists() and not first["demo_target"].labels[1].exists()
    with rasterio.open(fewer["demo_target"].images[0]) as src:
        assert (src.read() != before).any()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_nodata_corner_in_files(tmp_path):
    cities = make_demo_cities(tmp_path, size=64, rasters_per_city=1, nodata_corner=True)
    files = cities["demo_source"]
    with rasterio.open(files.images[0]) as img, rasterio.open(files.labels[0]) as lab:
        image, labels = img.read(), lab.read(1)
    ignored = labels == 255
    assert ignored.any() and (image[:, ignored] == 0).all() and (image[:, ~ignored] > 0).all()
