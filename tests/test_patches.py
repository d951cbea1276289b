"""Patch grids cover every pixel with the requested overlap; streams yield normalised patches."""

from __future__ import annotations

import numpy as np
import pytest

from semi2i.data.ingest import ingest_city
from semi2i.data.patches import Window, city_windows, equal_shards, grid_starts, patch_grid, shuffled
from semi2i.data.stream import iter_patches, read_patches, window_columns


@pytest.mark.parametrize("length,size,overlap", [(256, 256, 32), (700, 256, 32), (480, 256, 32), (1000, 128, 16), (129, 128, 0)])
def test_grid_covers_every_pixel_with_overlap(length, size, overlap):
    starts = grid_starts(length, size, overlap)
    covered = np.zeros(length, int)
    for s in starts:
        covered[s : s + size] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] == length - size
    # all but the border-aligned last step use the exact stride; the last one overlaps at least as much
    steps = np.diff(starts)
    assert (steps[:-1] == size - overlap).all() if len(steps) > 1 else True
    assert len(steps) == 0 or 0 < steps[-1] <= size - overlap


def test_grid_by_hand():
    assert grid_starts(700, 256, 32) == [0, 224, 444]
    assert patch_grid(300, 500, 256, 32) == [(0, 0), (0, 224), (0, 244), (44, 0), (44, 224), (44, 244)]
    with pytest.raises(ValueError, match="shorter than one 256 px patch"):
        grid_starts(100, 256, 32)


def test_shuffle_is_seeded_and_shards_are_equal():
    windows = [Window("s", "r", i, 0, 8) for i in range(11)]
    assert shuffled(windows, 3) == shuffled(windows, 3) != shuffled(windows, 4)
    assert shuffled(windows, 3, epoch=1) != shuffled(windows, 3, epoch=0)
    assert sorted(shuffled(windows, 3)) == sorted(windows)
    assert len(equal_shards(windows, 2)) == 10 and len(equal_shards(windows, 3)) == 9


@pytest.fixture
def city(tmp_path, write):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, 70, 90)).astype(np.uint8)
    img[:, :10, :10] = 0
    lbl = rng.integers(0, 3, size=(70, 90)).astype(np.uint8)
    lbl[60:, :] = 255
    write(tmp_path / "img" / "a.tif", img, nodata=0)
    write(tmp_path / "lbl" / "a.tif", lbl)
    write(tmp_path / "img" / "b.tif", img[:, :, ::-1].copy(), nodata=0)
    write(tmp_path / "lbl" / "b.tif", lbl[:, ::-1].copy())
    store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "c.zarr", labels=str(tmp_path / "lbl/*.tif"),
                        classes=["a", "b", "c"], min_size=32)
    return store, img, lbl


def test_windows_and_skip_threshold(city):
    store, _, _ = city
    windows = city_windows(store, size=32, overlap=8)
    assert len(windows) == 2 * len(patch_grid(70, 90, 32, 8))
    kept = city_windows(store, size=32, overlap=8, max_ignored=0.5)
    # windows starting at y=38 cover rows 38..69, of which 60..69 are ignore: 10/32 < 0.5, so kept
    assert 0 < len(kept) <= len(windows)
    assert all(w in windows for w in kept)
    assert len(city_windows(store, size=32, overlap=8, max_ignored=0.0)) < len(windows)


def test_plain_iterator_normalises_and_masks(city):
    store, img, lbl = city
    windows = city_windows(store, size=32, overlap=8)
    batch = next(iter_patches(windows, batch_size=3, normalize="zscore"))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (3, 32, 32) and batch["label"].dtype == np.int64
    first = windows[0]
    assert (first.y, first.x) == (0, 0)
    expected = (img[:, :32, :32].astype(np.float32) - store.band_stats.mean[:, None, None]) / store.band_stats.std[:, None, None]
    expected[:, :10, :10] = 0.0
    np.testing.assert_allclose(batch["image"][0], expected, rtol=1e-5, atol=1e-5)
    expected_label = lbl[:32, :32].astype(np.int64)
    expected_label[:10, :10] = 255
    np.testing.assert_array_equal(batch["label"][0], expected_label)
    unit = next(iter_patches(windows, normalize="unit"))["image"]
    assert unit.min() >= -1.0 and unit.max() <= 1.0


def test_plain_iterator_shards_partition_the_shuffled_windows(city):
    store, _, _ = city
    windows = city_windows(store, size=32, overlap=8)
    whole = [tuple(b["image"][0].ravel()[:5]) + (int(b["raster_index"][0]), int(b["y"][0]), int(b["x"][0]))
             for b in iter_patches(windows, seed=7)]
    shards = [[(int(b["raster_index"][0]), int(b["y"][0]), int(b["x"][0])) for b in iter_patches(windows, seed=7, shard=i, num_shards=2)]
              for i in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(k[-3:] for k in whole[: len(shards[0]) * 2])


@pytest.mark.ray
def test_ray_stream_equal_shards_same_patches_as_plain_iterator(city, ray_session):
    from semi2i.data.stream import patch_dataset

    store, _, _ = city
    windows = city_windows(store, size=32, overlap=8)
    ds = patch_dataset(windows, normalize="unit", seed=11, num_shards=2, read_batch_size=4)
    splits = ds.streaming_split(2, equal=True)
    # split iterators advance together (like Train workers), so each is consumed in its own thread
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        shard_batches = list(pool.map(lambda it: list(it.iter_batches(batch_size=None, batch_format="numpy")), splits))
    keys = []
    counts = []
    for batches in shard_batches:
        rows = [(int(r), int(y), int(x), img.tobytes(), lab.tobytes())
                for b in batches for r, y, x, img, lab in zip(b["raster_index"], b["y"], b["x"], b["image"], b["label"])]
        counts.append(len(rows))
        keys.extend(rows)
    assert counts[0] == counts[1] == len(windows) // 2
    plain = [(int(b["raster_index"][0]), int(b["y"][0]), int(b["x"][0]), b["image"][0].tobytes(), b["label"][0].tobytes())
             for b in iter_patches(windows, normalize="unit", seed=11, num_shards=2, shard=0)] + \
            [(int(b["raster_index"][0]), int(b["y"][0]), int(b["x"][0]), b["image"][0].tobytes(), b["label"][0].tobytes())
             for b in iter_patches(windows, normalize="unit", seed=11, num_shards=2, shard=1)]
    assert sorted(keys) == sorted(plain)
    # torch batches work: only numeric columns come out of the reader
    torch_batch = next(iter(ds.iter_torch_batches(batch_size=4)))
    assert torch_batch["image"].shape == (4, 3, 32, 32) and str(torch_batch["label"].dtype) == "torch.int64"


def test_read_patches_stats_override(city):
    store, img, _ = city
    from semi2i.data.normalize import BandStats

    stats = BandStats(mean=np.zeros(3), std=np.ones(3), quantiles=np.tile(np.linspace(0, 255, 1001), (3, 1)))
    w = Window(str(store.path), "a", 20, 20, 32)
    out = read_patches(window_columns([w]), "zscore", stats.to_attrs())
    np.testing.assert_allclose(out["image"][0], img[:, 20:52, 20:52].astype(np.float32))


def test_a_batch_prefetch_decodes_each_cold_chunk_once_and_reads_the_same_pixels(tmp_path, write):
    """read_patches fetches a batch's cold chunks in one request: afterwards every window is served from the
    cache (no further decode), and the pixels equal the raster's."""
    from semi2i.data.store import CHUNK_CACHE

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(2, 100, 120)).astype(np.uint8)
    lbl = rng.integers(0, 4, size=(100, 120)).astype(np.uint8)
    write(tmp_path / "img" / "a.tif", img)
    write(tmp_path / "lbl" / "a.tif", lbl)
    store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "c.zarr", labels=str(tmp_path / "lbl/*.tif"),
                        classes=["a", "b", "c", "d"], min_size=32, chunk_size=32)  # 4 x 4 chunks per array
    rid = store.rasters[0].id
    # chunks of 32 px: rows 0-1 x cols 0-1, rows 1-3 x cols 2-3, rows 0-1 x cols 0-1 again: 4 + 6 distinct chunks
    windows = [(rid, 5, 7, 40, 40), (rid, 60, 70, 40, 40), (rid, 10, 12, 40, 40)]
    CHUNK_CACHE.clear()
    misses = CHUNK_CACHE.misses
    store.prefetch(windows)
    assert CHUNK_CACHE.misses == misses  # put directly, no per-chunk load
    assert sum(key[0] == store._token for key in CHUNK_CACHE._values) == 2 * 10  # image and label chunks, each once
    for rid_, y, x, h, w in windows:
        image, label = store.read_window(rid_, y, x, h, w)
        np.testing.assert_array_equal(image, img[:, y : y + h, x : x + w])
        np.testing.assert_array_equal(label, lbl[y : y + h, x : x + w])
    assert CHUNK_CACHE.misses == misses  # every chunk came from the prefetch
    batch = read_patches(window_columns([Window(str(store.path), rid, 60, 70, 40)]), normalize="raw")
    np.testing.assert_array_equal(batch["image"][0], img[:, 60:100, 70:110])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_normalising_into_a_given_array_equals_the_formulas(dtype):
    from semi2i.data.normalize import BandStats

    rng = np.random.default_rng(2)
    stats = BandStats.from_pixels((rng.random((3, 4000)) * 250).astype(dtype))
    image = (rng.random((3, 9, 11)) * 255).astype(dtype)
    as_float = image.astype(np.float32)
    mean, std = stats.mean.astype(np.float32)[:, None, None], stats.std.astype(np.float32)[:, None, None]
    out = np.full(image.shape, np.nan, dtype=np.float32)
    assert stats.zscore(image, out=out) is out
    np.testing.assert_array_equal(out, (as_float - mean) / std)
    low, high = stats.low.astype(np.float32)[:, None, None], stats.high.astype(np.float32)[:, None, None]
    np.testing.assert_array_equal(stats.to_unit_range(image, out=out), np.clip(2.0 * (as_float - low) / (high - low) - 1.0, -1, 1))
    np.testing.assert_array_equal(stats.to_unit_range(image), out)
    with pytest.raises(ValueError, match="float32"):
        stats.zscore(image, out=np.empty(image.shape, dtype=np.float64))


def test_a_prefetch_the_cache_cannot_hold_is_skipped_and_reads_stay_right(tmp_path, write, monkeypatch):
    """With a cache too small for a batch's chunks (or none: SEMI2I_CHUNK_CACHE_MB=0), prefetching would decode
    every chunk twice; it is skipped, and the pixels are still the raster's."""
    import semi2i.data.store as store_module
    from semi2i.data.store import CHUNK_CACHE

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, size=(2, 64, 64)).astype(np.uint8)
    write(tmp_path / "img" / "a.tif", img)
    store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "c.zarr", min_size=16, chunk_size=16)
    rid = store.rasters[0].id
    gathered = []
    real_sync = store_module.zarr_sync
    monkeypatch.setattr(store_module, "zarr_sync", lambda coro: gathered.append(1) or real_sync(coro))
    CHUNK_CACHE.clear()
    store.read_window(rid, 3, 5, 40, 40)  # 3 x 3 chunks of 16 px: a prefetch while the cache has room
    assert gathered == [1]
    monkeypatch.setattr(CHUNK_CACHE, "max_bytes", 0)
    CHUNK_CACHE.clear()
    misses = CHUNK_CACHE.misses
    image, _ = store.read_window(rid, 3, 5, 40, 40)
    np.testing.assert_array_equal(image, img[:, 3:43, 5:45])
    assert gathered == [1]  # no second prefetch ...
    assert CHUNK_CACHE.misses - misses == 9  # ... each chunk decoded once, by the read itself
