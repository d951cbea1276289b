"""Region mapping: chunked = whole-raster blend (no seams), georeferenced COGs, resumable after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from conftest import ran_off_the_driver
from semi2i.data.normalize import BandStats
from semi2i.mapping import (
    NODATA_CLASS, Chunk, ChunkMapper, MappingError, WindowGrid, map_region, plan_chunks, read_classes,
)
from semi2i.models.unet import UNet
from semi2i.previews import IGNORE_COLOUR, class_colours
from semi2i.segment import SegmentationModel

PATCH, CLASSES = 32, 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random U-net (base width 4, depth 2, 32 px patches) in the fit_unet checkpoint format."""
    torch.manual_seed(0)
    model = UNet(3, CLASSES, base_width=4, depth=2).eval()
    rng = np.random.default_rng(0)
    stats = BandStats.from_pixels(rng.uniform(0, 255, (3, 1000)))
    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    torch.save({"model": model.state_dict(), "in_bands": 3, "num_classes": CLASSES, "class_names": ["a", "b", "c"],
                "ignore_index": 255, "unet": {"base_width": 4, "depth": 2, "patch_size": PATCH},
                "stats": stats.to_attrs()}, path)
    return path


def _image(h, w, seed=1):
    """Smooth-ish random imagery, so the class map has structure (and few argmax ties)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (3, h // 4 + 2, w // 4 + 2))
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)[:, :h, :w].astype(np.uint8)


def test_plan_chunks_cover_the_raster_once():
    chunks = plan_chunks("r", 100, 70, 32)
    cover = np.zeros((100, 70), int)
    for c in chunks:
        cover[c.y : c.y + c.h, c.x : c.x + c.w] += 1
    assert (cover == 1).all() and len(chunks) == 4 * 3
    assert Chunk.from_item(chunks[5].to_item()) == chunks[5]


def test_window_support_holds_every_window_touching_the_chunk():
    grid = WindowGrid(100, 70, 32, 8)
    origins = grid.origins(40, 30, 20, 20)
    y, x, h, w = grid.support(40, 30, 20, 20)
    assert origins and all(y <= oy and oy + 32 <= y + h and x <= ox and ox + 32 <= x + w for oy, ox in origins)
    assert all(oy < 60 and oy + 32 > 40 and ox < 50 and ox + 32 > 30 for oy, ox in origins)


def test_chunked_equals_whole_raster_blend(tmp_path, write, checkpoint):
    """Chunks of 24 px (smaller than a window, not a divisor of the raster) give the whole-raster blend."""
    image = _image(83, 101)  # not a multiple of the window, the chunk or the U-net's 2**depth
    src = write(tmp_path / "in" / "tile.tif", image)
    whole = SegmentationModel(checkpoint).logits(image, overlap=8)
    maps = {}
    for chunk in (24, 200):
        out = tmp_path / f"out{chunk}"
        map_region(str(src), checkpoint, out, chunk_size=chunk, overlap=8, cog=False, quicklook=False)
        maps[chunk] = read_classes(out, "tile")
    assert (maps[24] == maps[200]).all()
    assert (maps[24] == whole.argmax(0)).mean() > 0.999  # argmax ties aside, the whole-raster blend's map


def test_chunk_logits_match_whole_blend_and_forward(tmp_path, write, checkpoint):
    image = _image(83, 101)
    src = write(tmp_path / "in" / "tile.tif", image)
    out = tmp_path / "out"
    map_region(str(src), checkpoint, out, chunk_size=24, overlap=8, cog=False, quicklook=False)
    # re-compute chunks with the worker against the whole-raster results
    mapper = ChunkMapper({"checkpoint": str(checkpoint), "input": {"rasters": [str(src)]}, "zarr": str(out / "maps.zarr"),
                          "done_dir": str(tmp_path / "done"), "overlap": 8, "batch_tiles": 3})
    model = SegmentationModel(checkpoint)
    whole = model.logits(image, overlap=8)
    with torch.no_grad():
        forward = model.model(torch.from_numpy(model.stats.zscore(image)[None])).numpy()[0]
    for chunk in plan_chunks("tile", 83, 101, 24):
        logits = mapper.compute(chunk)["logits"]
        ys, xs = slice(chunk.y, chunk.y + chunk.h), slice(chunk.x, chunk.x + chunk.w)
        np.testing.assert_allclose(logits, whole[:, ys, xs], rtol=0, atol=1e-5)
    # away from window borders the blend is close to one whole-raster forward pass (padding differs at borders)
    inner = (slice(None), slice(12, 70), slice(12, 88))
    assert np.abs(whole[inner] - forward[inner]).mean() < 0.05 * np.abs(forward[inner]).mean() + 1e-3


def test_windows_prepared_on_the_device_give_the_same_logits(tmp_path, write, checkpoint):
    """The GPU path (raw pixels copied as they are, normalised and cut into windows on the device), run on
    the CPU, gives the host path's logits bit for bit: it is the same float32 arithmetic."""
    src = write(tmp_path / "in" / "tile.tif", _image(83, 101))
    out = tmp_path / "out"
    map_region(str(src), checkpoint, out, chunk_size=24, overlap=8, cog=False, quicklook=False)
    job = {"checkpoint": str(checkpoint), "input": {"rasters": [str(src)]}, "zarr": str(out / "maps.zarr"),
           "done_dir": str(tmp_path / "done"), "overlap": 8, "batch_tiles": 3}
    host, device = ChunkMapper(job), ChunkMapper(job)
    assert host._zscore_on_device is None  # a CPU job prepares its windows in numpy
    device._zscore_on_device = device.model.stats.zscore_tensor
    for chunk in plan_chunks("tile", 83, 101, 24):
        a, b = host.compute(chunk), device.compute(chunk)
        assert torch.equal(a["logits"], b["logits"]) and (a["classes"] == b["classes"]).all()
    stats = BandStats.from_pixels(np.random.default_rng(0).uniform(0, 4000, (3, 500)))
    for image in (_image(9, 7), _image(9, 7).astype(np.uint16) * 15, _image(9, 7).astype(np.float32) / 3):
        raw = torch.from_numpy(image.astype(np.int32) if image.dtype == np.uint16 else image)
        assert torch.equal(stats.zscore_tensor(raw), torch.from_numpy(stats.zscore(image)))


def test_cog_keeps_crs_transform_and_nodata(tmp_path, write, checkpoint):
    image = _image(70, 90)
    image[:, :10, :] = 0  # a nodata band across the top
    transform = from_origin(500000.0, 2800000.0, 0.3, 0.3)
    src = write(tmp_path / "in" / "scene.tif", image, transform=transform, nodata=0)
    out = tmp_path / "out"
    summary = map_region(str(src), checkpoint, out, chunk_size=32, overlap=8, probabilities=True)
    with rasterio.open(summary["rasters"]["scene"]["cog"]) as cog, rasterio.open(src) as ref:
        assert cog.crs == ref.crs and cog.transform == ref.transform
        assert cog.nodata == NODATA_CLASS and cog.dtypes[0] == "uint8" and cog.shape == (70, 90)
        classes = cog.read(1)
        assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert (classes[:10] == NODATA_CLASS).all() and (classes[10:] < CLASSES).all()
    assert (classes == read_classes(out, "scene")).all()
    # the quicklook is the class map in the class colours, nodata grey (full size: under 1024 px)
    quicklook = np.asarray(Image.open(out / "quicklook" / "scene.png").convert("RGB"))
    np.testing.assert_array_equal(quicklook, class_colours(CLASSES)[classes])
    assert (quicklook[:10] == IGNORE_COLOUR).all() and (quicklook[10:] != IGNORE_COLOUR).any(axis=-1).all()
    assert not (out / ".partial").exists() and json.loads((out / "job.json").read_text())["chunks"] == 9


def test_cog_is_deflated_with_overviews_that_decimate_the_classes(tmp_path):
    """write_cog's staged GeoTIFF (fast deflate) leaves no trace: the COG holds the classes, deflated, with
    nearest-neighbour overviews, and nothing else is left in its folder."""
    import zarr
    from affine import Affine
    from rasterio.enums import Compression

    from semi2i.data.store import RasterInfo
    from semi2i.mapping.output import write_cog

    blocks = np.random.default_rng(0).integers(0, CLASSES, (150, 130), dtype=np.uint8)
    classes = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)  # 600 x 520 in 4 px blocks: any decimation agrees
    array = zarr.create_array(zarr.storage.MemoryStore(), shape=classes.shape, chunks=(256, 256), dtype="uint8")
    array[:] = classes
    info = RasterInfo("r", 600, 520, None, Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0), "r.tif", None, 600 * 520)
    dest = tmp_path / "cog" / "r.tif"
    write_cog(array, info, dest, nodata=NODATA_CLASS)
    assert [p.name for p in dest.parent.iterdir()] == ["r.tif"]
    with rasterio.open(dest) as cog:
        assert cog.compression == Compression.deflate and cog.overviews(1) == [2, 4]
        np.testing.assert_array_equal(cog.read(1), classes)
        np.testing.assert_array_equal(cog.read(1, out_shape=(300, 260)), classes[::2, ::2])
        np.testing.assert_array_equal(cog.read(1, out_shape=(150, 130)), blocks)


def test_kill_and_resume_gives_identical_output(tmp_path, write, checkpoint):
    image = _image(56, 44)
    src = write(tmp_path / "in" / "a.tif", image)
    reference = tmp_path / "ref"
    map_region(str(src), checkpoint, reference, chunk_size=16, overlap=8, probabilities=True, quicklook=False)

    out, seen = tmp_path / "out", []

    def die_after_4(chunk):
        seen.append(chunk)
        if len(seen) == 4:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        map_region(str(src), checkpoint, out, chunk_size=16, overlap=8, probabilities=True, quicklook=False,
                   on_chunk=die_after_4)
    assert not (out / "maps.zarr").exists() and not (out / "cog").exists()  # nothing published yet
    summary = map_region(str(src), checkpoint, out, chunk_size=16, overlap=8, probabilities=True, quicklook=False)
    assert summary["computed_chunks"] == summary["chunks"] - 4
    import zarr
    a, b = (zarr.open_group(str(p / "maps.zarr"), mode="r")["a"] for p in (reference, out))
    assert (a["classes"][:] == b["classes"][:]).all() and (a["probabilities"][:] == b["probabilities"][:]).all()
    with rasterio.open(reference / "cog" / "a.tif") as x, rasterio.open(out / "cog" / "a.tif") as y:
        assert (x.read() == y.read()).all()


def test_bad_input_is_one_line(tmp_path, write, checkpoint):
    with pytest.raises(MappingError, match="not found"):
        map_region(str(tmp_path / "missing.tif"), checkpoint, tmp_path / "o1")
    two = write(tmp_path / "two.tif", np.zeros((2, 40, 40), np.uint8))
    with pytest.raises(MappingError, match="2 bands"):
        map_region(str(two), checkpoint, tmp_path / "o2")
    with pytest.raises(MappingError, match="checkpoint not found"):
        map_region(str(two), tmp_path / "nope.pt", tmp_path / "o3")


def test_ray_tasks_match_in_process(tmp_path, write, checkpoint, ray_session):
    image = _image(64, 80)
    src = write(tmp_path / "in" / "r.tif", image)
    local, remote = tmp_path / "local", tmp_path / "ray"
    map_region(str(src), checkpoint, local, chunk_size=32, overlap=8, cog=False, quicklook=False)
    summary = map_region(str(src), checkpoint, remote, chunk_size=32, overlap=8, cog=False, quicklook=False, use_ray=True,
                         workers=1)
    assert (read_classes(local, "r") == read_classes(remote, "r")).all()
    # the chunks (read straight from the input raster: no copy of it) and the publishing ran on the worker
    # node, none in this driver
    assert set(summary["placement"]) == {"map", "publish"}
    assert not (remote / ".partial").exists() and sorted(p.name for p in remote.iterdir()) == ["job.json", "maps.zarr"]
    assert ran_off_the_driver(summary["placement"]) == []
    assert json.loads((remote / "job.json").read_text())["placement"] == summary["placement"]


def test_stylize_then_segment_in_chunks_equals_whole_raster(tmp_path, write, checkpoint):
    """--stylize: SemI2I windows are also laid on one global grid, so chunking changes nothing."""
    from semi2i.config import SemI2IConfig
    from semi2i.stylizers.semi2i import SemI2IStylizer
    from semi2i.training.semi2i_step import SemI2IStep

    cfg = SemI2IConfig(in_bands_a=3, in_bands_b=3, base_width=4, n_res_blocks=1, disc_width=4, patch_size=32)
    step = SemI2IStep.create(cfg)
    gen = torch.Generator().manual_seed(0)
    step(torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1)
    semi2i = step.save(tmp_path / "semi2i.pt")
    rng = np.random.default_rng(4)
    src_stats = BandStats.from_pixels(rng.uniform(0, 255, (3, 500)))
    tgt_stats = BandStats.from_pixels(rng.uniform(50, 200, (3, 500)))
    image = _image(45, 52)
    src = write(tmp_path / "in" / "s.tif", image)
    spec = {"checkpoint": str(semi2i), "source": "a", "source_stats": src_stats.to_attrs(),
            "target_stats": tgt_stats.to_attrs(), "in_bands": 3, "out_bands": 3, "dtype": "float32"}
    out = tmp_path / "out"
    map_region(str(src), checkpoint, out, chunk_size=24, overlap=8, stylize=spec, quicklook=False)
    stylizer = SemI2IStylizer.from_checkpoint(semi2i, src_stats, tgt_stats, overlap=8)
    whole = stylizer.stylize(image)
    import zarr
    group = zarr.open_group(str(out / "maps.zarr"), mode="r")["s"]
    np.testing.assert_allclose(group["stylized"][:], whole, rtol=0, atol=1e-3)
    expected = SegmentationModel(checkpoint).logits(whole, overlap=8).argmax(0)
    assert (group["classes"][:] == expected).mean() > 0.999
    with rasterio.open(out / "cog" / "s_stylized.tif") as cog:
        assert cog.count == 3 and cog.dtypes[0] == "float32"


def test_killed_while_publishing_finishes_on_rerun(tmp_path, write, checkpoint, monkeypatch):
    import semi2i.mapping.job as job

    src = write(tmp_path / "in" / "p.tif", _image(40, 40))
    out = tmp_path / "out"

    def killed(*_, **__):
        raise KeyboardInterrupt("killed while publishing")

    monkeypatch.setattr(job, "write_quicklook", killed)
    with pytest.raises(KeyboardInterrupt):
        map_region(str(src), checkpoint, out, chunk_size=32, overlap=8)
    assert not (out / "job.json").exists() and not (out / "maps.zarr").exists()
    monkeypatch.undo()
    summary = map_region(str(src), checkpoint, out, chunk_size=32, overlap=8)
    assert summary["computed_chunks"] == 0 and (out / "job.json").exists() and (out / "quicklook" / "p.png").exists()


def test_inference_options_keep_the_classes(tmp_path, write, checkpoint):
    """bf16 autocast and NCHW give fp32's classes (bf16 within tolerance); options are recorded and checked."""
    image = _image(83, 101)
    src = write(tmp_path / "in" / "o.tif", image)
    maps = {}
    for name, opts in {"fp32": {}, "nchw": {"channels_last": False}, "bf16": {"precision": "bf16"},
                       "one_thread": {"threads": 1}}.items():
        out = tmp_path / name
        summary = map_region(str(src), checkpoint, out, chunk_size=40, overlap=8, cog=False, quicklook=False, **opts)
        maps[name] = read_classes(out, "o")
        # recorded whenever the windows differ from the patch size (here: the default, twice the 32 px patch)
        assert summary["settings"]["inference"]["window"] == 64
    assert (maps["nchw"] == maps["fp32"]).mean() > 0.999 and (maps["one_thread"] == maps["fp32"]).all()
    assert (maps["bf16"] == maps["fp32"]).mean() > 0.97  # bf16 keeps ~3 digits: near-ties may flip
    with pytest.raises(MappingError, match="precision"):
        map_region(str(src), checkpoint, tmp_path / "bad", precision="fp16")


def test_fitted_windows_cover_with_the_fewest_pixels():
    """As many windows as fixed ones need, each as small as still covers the side (multiples of 16)."""
    from semi2i.tiling import fitted_window, tile_starts

    assert fitted_window(838, 256, 16) == 224  # 4 windows: 4 x 224 = 896 px >= 838 + 3 x 16
    assert fitted_window(2000, 256, 16) == 240 and fitted_window(200, 256, 16) == 200 and fitted_window(256, 256, 16) == 256
    for length in range(257, 3000, 37):
        t = fitted_window(length, 256, 16)
        starts = tile_starts(length, t, 16)
        assert t % 16 == 0 and len(starts) == len(tile_starts(length, 256, 16))
        assert starts[-1] + t == length and all(b - a <= t - 16 for a, b in zip(starts, starts[1:]))


def test_default_windows_and_batches():
    """Windows of twice the patch; on a CPU as many windows per pass as fit 256 x 256 px, 8 on a GPU."""
    from semi2i.tiling import default_batch_windows, default_window

    assert [default_window(p) for p in (32, 128, 256)] == [64, 256, 512]
    assert [default_batch_windows(w) for w in (64, 128, 200, 256, 512)] == [16, 4, 1, 1, 1]
    assert default_batch_windows(512, "cuda") == 8 and default_batch_windows(128, "cpu") == 4


def test_larger_windows_equal_their_whole_raster_blend(tmp_path, write, checkpoint):
    """``window`` > the patch size: chunked mapping is still the whole-raster blend with that window (no seams)."""
    from semi2i.tiling import blend_tiles

    image = _image(83, 101)
    src = write(tmp_path / "in" / "w.tif", image)
    model = SegmentationModel(checkpoint)
    with torch.no_grad():
        whole = blend_tiles(image, model.model, CLASSES, tile=48, overlap=8, prepare=model.stats.zscore, fit=True)
    map_region(str(src), checkpoint, tmp_path / "out", chunk_size=24, overlap=8, window=48, cog=False, quicklook=False)
    assert (read_classes(tmp_path / "out", "w") == whole.argmax(0)).mean() > 0.999


def test_window_cache_computes_shared_windows_once_and_frees_them():
    from semi2i.mapping.cache import WindowCache

    chunks = plan_chunks("r", 64, 64, 32)  # 2 x 2 chunks; a window at (16, 16) touches all four
    cache = WindowCache(chunks, 32)
    key = ("r", "segment", 16, 16, 32, 32)
    assert cache.consumers(key) == 4
    ready, waiting, mine = cache.claim([key])
    assert mine == [key] and not ready and not waiting
    _, waiting, mine = cache.claim([key])  # another thread while it is computed: waits, does not recompute
    assert not mine and key in waiting
    cache.put(key, np.ones((3, 32, 32), np.float32))
    assert waiting[key].result().shape == (3, 32, 32)
    for _ in range(4):
        cache.release(key)
    assert cache.bytes == 0 and cache.claim([key])[2] == [key]  # freed after its last consumer


def test_rasters_are_read_where_they_lie_png_and_inf(tmp_path, write, checkpoint):
    """No copy of the input is made; a whole-file format (PNG) maps like the same pixels as a GeoTIFF, and a
    float raster with an inf pixel is refused naming the file, with nothing left behind."""
    image = _image(70, 90)
    tif = write(tmp_path / "in" / "a.tif", image)
    png = write(tmp_path / "png" / "a.png", image, crs=None, driver="PNG")
    for name, src in (("tif", tif), ("png", png)):
        map_region(str(src), checkpoint, tmp_path / name, chunk_size=32, overlap=8, cog=False, quicklook=False)
    assert (read_classes(tmp_path / "tif", "a") == read_classes(tmp_path / "png", "a")).all()
    bad = image.astype(np.float32)
    bad[1, 50, 60] = np.inf
    src = write(tmp_path / "inf" / "f.tif", bad)
    with pytest.raises(MappingError, match=r"inf/f\.tif: \+-inf pixels near row \d+, column \d+"):
        map_region(str(src), checkpoint, tmp_path / "out", chunk_size=32, overlap=8)
    assert not (tmp_path / "out").exists()
