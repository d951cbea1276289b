"""Synthetic demo cities: valid labels, sensible scenes, real georeferencing, a real domain shift."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from semi2i.data import synthetic as S

VALID = set(range(len(S.CLASS_NAMES)))


# --- helpers: a nearest-class-mean per-pixel colour classifier ----------------------------------


def _pixels(image: np.ndarray) -> np.ndarray:
    return image.reshape(image.shape[0], -1).T.astype(np.float64)


def _fit_means(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x, y = _pixels(image), labels.ravel()
    return np.stack([x[y == c].mean(0) for c in range(len(S.CLASS_NAMES))])


def _predict(means: np.ndarray, image: np.ndarray) -> np.ndarray:
    x = _pixels(image)
    return ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)


def _accuracy_and_miou(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    y = labels.ravel()
    keep = y != S.IGNORE_INDEX
    n = len(S.CLASS_NAMES)
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
    return S.make_city_pair(512, seed=0, target_nir=True)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cities = S.make_demo_cities(out, size=288, rasters_per_city=2, seed=3, target_nir=True)
    return out, cities


# --- scenes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_are_class_indices_only(seed):
    labels = S.generate_scene(256, seed)
    assert labels.dtype == np.uint8 and labels.shape == (256, 256)
    assert set(np.unique(labels).tolist()) <= VALID


def test_nodata_corner_only_when_requested():
    labels = S.generate_scene(256, 0, nodata_corner=True)
    values = set(np.unique(labels).tolist())
    assert S.IGNORE_INDEX in values and values - {S.IGNORE_INDEX} <= VALID
    ignored = labels == S.IGNORE_INDEX
    assert 0.005 < ignored.mean() < 0.1
    assert ignored[0, 0] or ignored[0, -1] or ignored[-1, 0] or ignored[-1, -1]  # a corner, not a hole

    image = S.render_scene(labels, S.SENSOR_A, 0)
    assert (image[:, ignored] == S.IMAGE_NODATA).all()
    assert (image[:, ~ignored] != S.IMAGE_NODATA).all()  # 0 is unambiguous nodata


@pytest.mark.parametrize("seed", range(5))
def test_default_scene_has_every_class_in_sensible_shares(seed):
    shares = S.class_shares(S.generate_scene(512, seed))
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
        labels = S.generate_scene(shape, 1, nodata_corner=True)
        assert labels.shape == shape
        image = S.render_scene(labels, S.SENSOR_B.with_nir(), 1)
        assert image.shape == (4, *shape) and image.dtype == np.uint8


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = S.generate_scene(256, 7), S.generate_scene(256, 7), S.generate_scene(256, 8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2
    np.testing.assert_array_equal(S.render_scene(a, S.SENSOR_B, 5), S.render_scene(b, S.SENSOR_B, 5))
    p, q = S.make_city_pair(128, seed=4), S.make_city_pair(128, seed=4)
    for city in p:
        np.testing.assert_array_equal(p[city][0], q[city][0])
        np.testing.assert_array_equal(p[city][1], q[city][1])
    # The two cities are different places.
    assert (p["demo_source"][1] != p["demo_target"][1]).mean() > 0.2


# --- sensors and the domain shift -----------------------------------------------------------------


def test_sensor_lookup_and_bands():
    assert S.get_sensor("sensor_a").bands == ("red", "green", "blue")
    assert S.get_sensor("sensor_b", nir=True).bands == ("red", "green", "blue", "nir")
    assert S.get_sensor("sensor_b", nir=True).with_nir(False) == S.SENSOR_B
    with pytest.raises(ValueError, match="unknown sensor"):
        S.get_sensor("sensor_z")
    with pytest.raises(ValueError, match="bands"):
        S.Sensor(name="bad", bands=("red", "swir"))


def test_sensors_differ_strongly_on_the_same_scene():
    labels = S.generate_scene(256, 0)
    a = S.render_scene(labels, S.SENSOR_A, 0).reshape(3, -1).mean(1)
    b = S.render_scene(labels, S.SENSOR_B, 0).reshape(3, -1).mean(1)
    assert np.abs(a - b).mean() > 40, (a, b)
    assert a.mean() > b.mean() + 30  # source bright, target dark


def test_cities_are_the_same_kind_of_city(pair512):
    src = S.class_shares(pair512["demo_source"][1])
    tgt = S.class_shares(pair512["demo_target"][1])
    for name in S.CLASS_NAMES:
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
    veg, water = nir[labels == S.VEGETATION].mean(), nir[labels == S.WATER].mean()
    assert veg > water + 40, (veg, water)


# --- files ------------------------------------------------------------------------------------------


def test_geotiffs_read_back_georeferenced(demo_dir):
    out, cities = demo_dir
    assert set(cities) == {"demo_source", "demo_target"}
    doc = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in doc["classes"]] == list(S.CLASS_NAMES)
    assert [c["index"] for c in doc["classes"]] == [0, 1, 2, 3, 4] and doc["ignore_index"] == 255

    transforms = set()
    for name, files in cities.items():
        assert files.name == name and files.classes == list(S.CLASS_NAMES)
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
    first = S.make_demo_cities(tmp_path, size=64, rasters_per_city=2, seed=1)
    paths = [p for c in first.values() for p in (*c.images, *c.labels)]
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    with rasterio.open(first["demo_target"].images[0]) as src:
        before = src.read()

    again = S.make_demo_cities(tmp_path, size=64, rasters_per_city=2, seed=1)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps  # nothing rewritten

    # Other arguments rewrite the rasters and drop the ones that no longer belong.
    fewer = S.make_demo_cities(tmp_path, size=64, rasters_per_city=1, seed=2)
    assert not first["demo_target"].images[1].exists() and not first["demo_target"].labels[1].exists()
    with rasterio.open(fewer["demo_target"].images[0]) as src:
        assert (src.read() != before).any()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_nodata_corner_in_files(tmp_path):
    cities = S.make_demo_cities(tmp_path, size=64, rasters_per_city=1, nodata_corner=True)
    files = cities["demo_source"]
    with rasterio.open(files.images[0]) as img, rasterio.open(files.labels[0]) as lab:
        image, labels = img.read(), lab.read(1)
    ignored = labels == 255
    assert ignored.any() and (image[:, ignored] == 0).all() and (image[:, ~ignored] > 0).all()
