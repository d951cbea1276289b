"""Ingest: exact round trips, palette decoding, and one clear error (and no store) per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

from conftest import REPO
from semi2i.data.ingest import IngestError, ingest_city
from semi2i.data.palette import Palette
from semi2i.data.store import CityStore

PALETTE = {
    "classes": [
        {"index": 0, "name": "building", "rgb": [60, 16, 152]},
        {"index": 1, "name": "road", "rgb": [110, 193, 228]},
        {"index": 2, "name": "water", "rgb": [226, 169, 41]},
    ],
    "ignore": [[155, 155, 155], [0, 0, 0]],
}


@pytest.fixture
def palette_file(tmp_path):
    path = tmp_path / "palette.json"
    path.write_text(json.dumps(PALETTE))
    return path


def _image(rng, bands=3, h=40, w=48, dtype=np.uint16):
    return rng.integers(1, 4000, size=(bands, h, w)).astype(dtype)


def _no_leftovers(out):
    return not out.exists() and not any(p.name.startswith(f".{out.name}.tmp") for p in out.parent.iterdir())


def test_round_trip_pixels_crs_transform_nodata(tmp_path, write):
    rng = np.random.default_rng(0)
    img = _image(rng)
    img[:, :3, :5] = 0  # a nodata corner
    lbl = rng.integers(0, 3, size=(40, 48)).astype(np.uint8)
    lbl[10:12, 10:12] = 255
    transform = from_origin(500123.25, 4100456.5, 0.3, 0.3)
    crs = CRS.from_epsg(32631)
    write(tmp_path / "img" / "a.tif", img, crs=crs, transform=transform, nodata=0)
    write(tmp_path / "lbl" / "a.tif", lbl, crs=crs, transform=transform)
    store = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "city.zarr", labels=str(tmp_path / "lbl" / "*.tif"),
                        classes=["a", "b", "c"], min_size=32, chunk_size=16)

    reopened = CityStore(tmp_path / "city.zarr")
    info = reopened.rasters[0]
    assert (info.height, info.width) == (40, 48) and info.crs == crs and info.transform == transform
    ds = reopened.dataset(info.id)
    assert ds.rio.crs == crs and ds.rio.transform() == transform
    assert ds.image.dtype == np.uint16 and ds.label.dtype == np.uint8
    np.testing.assert_array_equal(ds.image.values, img)
    expected_label = lbl.copy()
    expected_label[:3, :5] = 255  # nodata pixels become ignore
    np.testing.assert_array_equal(ds.label.values, expected_label)
    # the direct whole-raster reads equal the dataset's, strided too
    np.testing.assert_array_equal(reopened.read(info.id), img)
    np.testing.assert_array_equal(reopened.read(info.id, "label", step=3), expected_label[::3, ::3])
    np.testing.assert_array_equal(reopened.read(info.id, step=4), img[:, ::4, ::4])
    assert reopened.nodata == 0 and ds.image.attrs["nodata"] == 0
    assert reopened.class_names == ["a", "b", "c"] and reopened.ignore_index == 255
    assert reopened.meta["provenance"]["images"][0].endswith("a.tif")
    # statistics exclude nodata pixels, exactly
    valid = img[:, 3:, :].reshape(3, -1), img[:, :3, 5:].reshape(3, -1)
    pixels = np.concatenate(valid, axis=1).astype(np.float64)
    np.testing.assert_allclose(store.band_stats.mean, pixels.mean(axis=1))
    np.testing.assert_allclose(store.band_stats.std, pixels.std(axis=1))
    assert store.band_stats.quantiles[0, 0] == pixels[0].min() and store.band_stats.quantiles[0, -1] == pixels[0].max()
    # windows come straight from zarr
    win, lab = reopened.read_window(info.id, 5, 7, 16, 16)
    np.testing.assert_array_equal(win, img[:, 5:21, 7:23])
    np.testing.assert_array_equal(lab, expected_label[5:21, 7:23])


def test_palette_decoding_rgb_and_colour_table(tmp_path, write, palette_file):
    pal = Palette.load(palette_file)
    rgb = np.zeros((3, 2, 3), dtype=np.uint8)
    colours = [[60, 16, 152], [110, 193, 228], [226, 169, 41], [155, 155, 155], [0, 0, 0], [1, 2, 3]]
    for i, c in enumerate(colours):
        rgb[:, i // 3, i % 3] = c
    labels, unknown, counts = pal.decode(rgb)
    np.testing.assert_array_equal(labels, [[0, 1, 2], [255, 255, 255]])
    assert unknown.tolist() == [(1 << 16) | (2 << 8) | 3] and counts.tolist() == [1]

    # a single-band paletted PNG decodes through its colour table
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 4, size=(32, 32)).astype(np.uint8)
    cmap = {0: (60, 16, 152, 255), 1: (110, 193, 228, 255), 2: (226, 169, 41, 255), 3: (155, 155, 155, 255)}
    write(tmp_path / "m" / "p.png", idx, crs=None, driver="PNG", colormap=cmap)
    write(tmp_path / "i" / "p.png", _image(rng, h=32, w=32, dtype=np.uint8), crs=None, driver="PNG")
    store = ingest_city(str(tmp_path / "i" / "*.png"), tmp_path / "c.zarr", labels=str(tmp_path / "m" / "*.png"),
                        palette=palette_file, min_size=32)
    expected = np.array([0, 1, 2, 255], dtype=np.uint8)[idx]
    np.testing.assert_array_equal(store.dataset("p").label.values, expected)
    assert store.rasters[0].crs is None and store.class_names == ["building", "road", "water"]


def _pair(tmp_path, write, img, lbl, **kw):
    write(tmp_path / "img" / "r.tif", img, **kw)
    write(tmp_path / "lbl" / "r.tif", lbl, **kw)
    return str(tmp_path / "img" / "*.tif"), str(tmp_path / "lbl" / "*.tif")


def _expect_error(match, tmp_path, images, **kwargs):
    out = tmp_path / "out.zarr"
    kwargs.setdefault("min_size", 16)
    with pytest.raises(IngestError, match=match):
        ingest_city(images, out, **kwargs)
    assert _no_leftovers(out)


def test_missing_file_and_empty_glob(tmp_path):
    _expect_error(r"nothing\.tif: image file not found", tmp_path, str(tmp_path / "nothing.tif"))
    _expect_error(r"\*\.tif: no image files match", tmp_path, str(tmp_path / "none" / "*.tif"))


def test_size_mismatch(tmp_path, write):
    rng = np.random.default_rng(2)
    images, labels = _pair(tmp_path, write, _image(rng), np.zeros((40, 40), np.uint8))
    write(tmp_path / "lbl" / "r.tif", np.zeros((40, 40), np.uint8))
    _expect_error(r"lbl/r\.tif: label is 40x40 but image r\.tif is 40x48", tmp_path, images, labels=labels)


def test_crs_and_transform_mismatch(tmp_path, write):
    rng = np.random.default_rng(3)
    write(tmp_path / "img" / "r.tif", _image(rng))
    write(tmp_path / "lbl" / "r.tif", np.zeros((40, 48), np.uint8), crs=CRS.from_epsg(32631))
    _expect_error(r"lbl/r\.tif: label CRS EPSG:32631 differs", tmp_path, str(tmp_path / "img/*.tif"), labels=str(tmp_path / "lbl/*.tif"))
    write(tmp_path / "lbl" / "r.tif", np.zeros((40, 48), np.uint8), transform=from_origin(1, 2, 0.5, 0.5))
    _expect_error(r"lbl/r\.tif: label transform .* differs", tmp_path, str(tmp_path / "img/*.tif"), labels=str(tmp_path / "lbl/*.tif"))


def test_label_colour_not_in_palette(tmp_path, write, palette_file):
    rng = np.random.default_rng(4)
    mask = np.zeros((3, 40, 48), np.uint8)
    mask[:] = np.array([60, 16, 152], np.uint8)[:, None, None]
    mask[:, :5, :4] = np.array([9, 8, 7], np.uint8)[:, None, None]  # 20 px of an unknown colour
    images, labels = _pair(tmp_path, write, _image(rng, dtype=np.uint8), mask)
    _expect_error(r"lbl/r\.tif: 1 colour\(s\) not in the palette \(\(9, 8, 7\): 20 px\)", tmp_path, images,
                  labels=labels, palette=palette_file)


def test_strips_are_only_for_memory(tmp_path, write, palette_file, monkeypatch):
    """A raster written in several strips is the one-strip store, statistics included, and the colours
    a strip cannot decode are counted over every strip."""
    import semi2i.data.ingest as ingest

    rng = np.random.default_rng(8)
    img = _image(rng, h=40, w=48)
    img[:, 30:, :6] = 0  # nodata in the last strip only
    lbl = rng.integers(0, 3, size=(40, 48)).astype(np.uint8)
    write(tmp_path / "img" / "a.tif", img, nodata=0)
    write(tmp_path / "lbl" / "a.tif", lbl)
    kw = dict(labels=str(tmp_path / "lbl" / "*.tif"), classes=["a", "b", "c"], min_size=32, chunk_size=16)
    whole = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "whole.zarr", **kw)
    monkeypatch.setattr(ingest, "_STRIP_PIXELS", 16 * 48)  # one chunk row per strip: 16 + 16 + 8 rows
    strips = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "strips.zarr", **kw)
    np.testing.assert_array_equal(strips.read("a"), whole.read("a"))
    np.testing.assert_array_equal(strips.read("a", "label"), whole.read("a", "label"))
    assert (strips.read("a", "label")[30:, :6] == 255).all()
    assert strips.band_stats.to_attrs() == whole.band_stats.to_attrs() and strips.rasters == whole.rasters

    mask = np.zeros((3, 40, 48), np.uint8)
    mask[:] = np.array([60, 16, 152], np.uint8)[:, None, None]
    mask[:, 10:20, :2] = np.array([9, 8, 7], np.uint8)[:, None, None]  # 20 px of an unknown colour, over 2 strips
    images, labels = _pair(tmp_path / "rgb", write, _image(rng, dtype=np.uint8), mask)
    _expect_error(r"lbl/r\.tif: 1 colour\(s\) not in the palette \(\(9, 8, 7\): 20 px\)", tmp_path, images,
                  labels=labels, palette=palette_file, chunk_size=16)


def test_rasters_ingested_side_by_side_give_the_same_store(tmp_path, write):
    """Rasters written on several threads (the default here) give the store one thread writes, document for
    document and chunk for chunk; only the name (from the path) and the time of ingest differ."""
    import json

    rng = np.random.default_rng(9)
    for k, (h, w) in enumerate([(40, 48), (33, 50), (64, 40), (40, 48), (36, 36)]):
        write(tmp_path / "img" / f"r{k}.tif", _image(rng, h=h, w=w), nodata=0)
        write(tmp_path / "lbl" / f"r{k}.tif", rng.integers(0, 3, size=(h, w)).astype(np.uint8))
    kw = dict(labels=str(tmp_path / "lbl" / "*.tif"), classes=["a", "b", "c"], min_size=32, chunk_size=16)
    one = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "one" / "city.zarr", threads=1, **kw).path
    many = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "many" / "city.zarr", threads=3, **kw).path
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(many) for p in many.rglob("*") if p.is_file()) and len(files) > 50
    for rel in files:
        a, b = (one / rel).read_bytes(), (many / rel).read_bytes()
        if str(rel) == "zarr.json":
            a, b = json.loads(a), json.loads(b)
            for doc in (a, b):
                doc["attributes"]["semi2i"]["provenance"].pop("ingested_at")
        assert a == b, rel


@pytest.mark.parametrize("dtype,nodata,crs", [(np.uint16, 0, CRS.from_epsg(32631)), (np.float32, float("nan"), None)])
def test_raster_groups_are_what_xarray_writes_for_the_whole_dataset(tmp_path, write, dtype, nodata, crs):
    """Ingest has xarray write only the georeferencing and zarr create the pixel arrays: the documents must equal
    the ones ``Dataset.to_zarr`` writes for the georeferenced Dataset with its pixel variables."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr

    from semi2i.data.ingest import STORE_CODEC as codec

    h, w = 40, 48
    # a raster without a CRS (a plain image) has the identity transform
    transform = from_origin(500123.25, 4100456.5, 0.3, 0.3) if crs is not None else Affine.identity()
    write(tmp_path / "img" / "a.tif", _image(np.random.default_rng(1), h=h, w=w, dtype=dtype), crs=crs,
          transform=transform, nodata=nodata)
    write(tmp_path / "lbl" / "a.tif", np.zeros((h, w), np.uint8), crs=crs, transform=transform)
    store = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "city.zarr", labels=str(tmp_path / "lbl" / "*.tif"),
                        classes=["a"], min_size=32, chunk_size=16)
    ds = xr.Dataset({"image": (("band", "y", "x"), da.empty((3, h, w), dtype=dtype, chunks=-1),
                               {"nodata": nodata, "band_names": ["b1", "b2", "b3"], "long_name": "image"}),
                     "label": (("y", "x"), da.empty((h, w), dtype=np.uint8, chunks=-1),
                               {"ignore_index": 255, "long_name": "class index"})},
                    coords={"band": [1, 2, 3], "x": transform.c + transform.a * (np.arange(w) + 0.5),
                            "y": transform.f + transform.e * (np.arange(h) + 0.5)})
    ds = (ds.rio.write_crs(crs) if crs is not None else ds).rio.write_transform(transform).rio.write_grid_mapping("spatial_ref")
    ds["image"].encoding.update(chunks=(3, 16, 16), compressors=(codec,))
    ds["label"].encoding.update(chunks=(16, 16), compressors=(codec,))
    ds.to_zarr(tmp_path / "xarray.zarr", group="a", compute=False, zarr_format=3, consolidated=False)
    ours, theirs = store.path / "rasters" / "a", tmp_path / "xarray.zarr" / "a"
    for name in ["image", "label", "band", "x", "y", "spatial_ref"]:
        assert json.loads((ours / name / "zarr.json").read_bytes()) == json.loads((theirs / name / "zarr.json").read_bytes()), name
    group = json.loads((ours / "zarr.json").read_bytes())
    assert group["attributes"].keys() == {"semi2i"} and json.loads((theirs / "zarr.json").read_bytes())["attributes"] == {}
    for name in ["band", "x", "y"]:  # the coordinates' values too
        assert (ours / name / "c" / "0").read_bytes() == (theirs / name / "c" / "0").read_bytes(), name


def test_label_index_out_of_range(tmp_path, write):
    rng = np.random.default_rng(5)
    lbl = np.zeros((40, 48), np.uint8)
    lbl[0, :7] = 9
    images, labels = _pair(tmp_path, write, _image(rng), lbl)
    _expect_error(r"lbl/r\.tif: label values \[9\] \(7 pixels\) out of range for 3 classes", tmp_path, images,
                  labels=labels, classes=["a", "b", "c"])


def test_band_count_mismatch(tmp_path, write):
    rng = np.random.default_rng(6)
    write(tmp_path / "img" / "a.tif", _image(rng, bands=3))
    write(tmp_path / "img" / "b.tif", _image(rng, bands=4))
    _expect_error(r"img/b\.tif: has 4 bands but a\.tif has 3", tmp_path, str(tmp_path / "img/*.tif"))


def test_raster_smaller_than_a_patch(tmp_path, write):
    write(tmp_path / "img" / "s.tif", _image(np.random.default_rng(7), h=20, w=300))
    _expect_error(r"img/s\.tif: raster is 20x300, smaller than one 256x256 patch", tmp_path, str(tmp_path / "img/*.tif"), min_size=256)


def test_all_nodata_raster(tmp_path, write):
    write(tmp_path / "img" / "n.tif", np.zeros((3, 40, 48), np.uint16), nodata=0)
    _expect_error(r"img/n\.tif: every pixel is nodata", tmp_path, str(tmp_path / "img/*.tif"))


def test_nan_pixels_are_nodata(tmp_path, write):
    img = np.random.default_rng(8).random((2, 40, 48)).astype(np.float32)
    img[:, 0, :] = np.nan
    write(tmp_path / "img" / "f.tif", img)
    store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "f.zarr", min_size=16)
    assert store.rasters[0].valid_pixels == 39 * 48
    assert np.isfinite(store.band_stats.mean).all()


def test_corrupt_file(tmp_path):
    bad = tmp_path / "img" / "bad.tif"
    bad.parent.mkdir()
    bad.write_bytes(b"II*\x00 this is not a tiff")
    _expect_error(r"img/bad\.tif: cannot read image raster", tmp_path, str(bad))


def test_existing_store_refused_unless_overwrite(tmp_path, write):
    rng = np.random.default_rng(9)
    write(tmp_path / "img" / "a.tif", _image(rng))
    out = tmp_path / "city.zarr"
    ingest_city(str(tmp_path / "img/*.tif"), out, min_size=16)
    before = CityStore(out).band_stats.mean.copy()
    with pytest.raises(IngestError, match=r"city\.zarr: output store already exists"):
        ingest_city(str(tmp_path / "img/*.tif"), out, min_size=16)
    assert np.array_equal(CityStore(out).band_stats.mean, before)
    write(tmp_path / "img" / "a.tif", _image(rng) + 100)
    after = ingest_city(str(tmp_path / "img/*.tif"), out, min_size=16, overwrite=True)
    assert not np.array_equal(after.band_stats.mean, before)


def test_pairing_by_name_not_order(tmp_path, write):
    rng = np.random.default_rng(10)
    for name, value in [("north", 1), ("south", 2)]:
        write(tmp_path / "img" / f"{name}.tif", _image(rng))
        write(tmp_path / "lbl" / f"{name}.tif", np.full((40, 48), value, np.uint8))
    labels = [str(tmp_path / "lbl" / "south.tif"), str(tmp_path / "lbl" / "north.tif")]  # reversed on purpose
    store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "p.zarr", labels=labels, classes=["x", "n", "s"], min_size=16)
    assert int(store.dataset("north").label.values.max()) == 1 and int(store.dataset("south").label.values.max()) == 2


def test_cli_one_line_error_and_exit_code(tmp_path):
    out = tmp_path / "c.zarr"
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "ingest.py"), "--images", str(tmp_path / "*.tif"), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no image files match" in proc.stderr
    assert not out.exists()


def test_real_dubai_tile_2(shared_data, tmp_path):
    root = shared_data / "dubai-aerial"
    store = ingest_city(str(root / "tile_2/images/*.jpg"), tmp_path / "t2.zarr", labels=str(root / "tile_2/masks/*.png"),
                        palette=root / "palette.json")
    assert len(store.rasters) == 9 and store.band_names == ["red", "green", "blue"]
    assert store.class_names == ["building", "road", "vegetation", "water", "land"]
    first = store.rasters[0]
    assert first.crs is None and first.source_image.endswith("tile_2/images/image_part_001.jpg")
    import rasterio

    with rasterio.open(root / "tile_2/images/image_part_001.jpg") as src:
        np.testing.assert_array_equal(store.dataset(first.id).image.values, src.read())
    labels = np.concatenate([store.dataset(r.id).label.values.ravel() for r in store.rasters])
    shares = np.bincount(labels, minlength=256)[:5] / (labels != 255).sum()
    # the README's class shares for tile 2: 12/13/6/7/60 % (building/road/vegetation/water/land)
    np.testing.assert_allclose(shares * 100, [12, 13, 6, 7, 60], atol=2.5)


def test_both_compressors_store_the_same_pixels_and_name_their_codec(tmp_path, write):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 4000, size=(2, 80, 70)).astype(np.uint16)
    lbl = rng.integers(0, 3, size=(80, 70)).astype(np.uint8)
    write(tmp_path / "img" / "a.tif", img)
    write(tmp_path / "lbl" / "a.tif", lbl)
    reads = {}
    for name in ("lz4", "zstd"):
        store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / f"{name}.zarr", labels=str(tmp_path / "lbl/*.tif"),
                            classes=["a", "b", "c"], min_size=32, compressor=name)
        rid = store.rasters[0].id
        reads[name] = store.read_window(rid, 0, 0, 80, 70)
        meta = json.loads((tmp_path / f"{name}.zarr" / "rasters" / rid / "image" / "zarr.json").read_text())
        assert [c["configuration"]["cname"] for c in meta["codecs"] if c["name"] == "blosc"] == [name]
    for name, (image, label) in reads.items():
        np.testing.assert_array_equal(image, img)
        np.testing.assert_array_equal(label, lbl)
