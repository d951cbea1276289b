"""Stylizers: histogram matching, gray world, identity, SemI2I (tiling, determinism, checkpoints)."""

import numpy as np
import pytest
import torch

from semi2i.config import SemI2IConfig
from semi2i.data.normalize import BandStats
from semi2i.models.semi2i import GlobalStyleStats, SemI2IGenerator
from semi2i.stylizers import (
    STYLIZERS,
    GrayWorldStylizer,
    HistogramMatchingStylizer,
    IdentityStylizer,
    SemI2IStylizer,
    load_stylizer,
)
from semi2i.tiling import ramp as _ramp, tile_starts as _starts
from semi2i.training.semi2i_step import SemI2IStep


def stats_of(image: np.ndarray) -> BandStats:
    return BandStats.from_pixels(image.reshape(image.shape[0], -1))


# --- histogram matching ------------------------------------------------------------------------
def test_histogram_matching_maps_a_known_distribution_onto_a_known_target():
    u = np.linspace(0.0, 1.0, 20001)
    source = BandStats.from_pixels(np.stack([100 * u, 10 + 20 * u]))  # uniform on [0,100] and [10,30]
    target = BandStats.from_pixels(np.stack([50 + 20 * u**2, 1 - u]))  # a convex map and a decreasing one...
    # ...whose *distribution* is uniform on [0, 1] in band 2: matching keeps the order, so x ↦ (x-10)/20.
    stylizer = HistogramMatchingStylizer(source, target)
    rng = np.random.default_rng(0)
    raster = np.stack([rng.uniform(0, 100, (7, 9)), rng.uniform(10, 30, (7, 9))])
    out = stylizer.stylize(raster)
    assert out.dtype == np.float32 and out.shape == raster.shape
    np.testing.assert_allclose(out[0], 50 + 20 * (raster[0] / 100) ** 2, atol=0.05)
    np.testing.assert_allclose(out[1], (raster[1] - 10) / 20, atol=0.002)
    # outside the source range: clamped to the target's extremes
    assert stylizer.stylize(np.full((2, 1, 1), -5.0))[:, 0, 0].tolist() == pytest.approx([50.0, 0.0])


def test_histogram_matching_normal_to_normal_and_integer_ties():
    rng = np.random.default_rng(1)
    source_pixels = rng.normal(0, 1, (1, 200_000))
    target_pixels = rng.normal(5, 2, (1, 200_000))
    stylizer = HistogramMatchingStylizer(BandStats.from_pixels(source_pixels), BandStats.from_pixels(target_pixels))
    out = stylizer.stylize(source_pixels.reshape(1, 400, 500))
    assert out.mean() == pytest.approx(5.0, abs=0.02) and out.std() == pytest.approx(2.0, abs=0.02)
    # uint8 data: 40% of the pixels share one value; it maps to the middle of its target quantile range
    ints = np.concatenate([np.full(400, 100), np.arange(600) % 200]).astype(np.uint8)[None]
    target = BandStats.from_pixels(np.linspace(0, 1, 1000)[None])
    mapped = HistogramMatchingStylizer(BandStats.from_pixels(ints), target).stylize(ints.reshape(1, 20, 50))
    order = np.argsort(ints.ravel(), kind="stable")
    assert np.all(np.diff(mapped.ravel()[order]) >= 0)  # monotone
    # value 100 spans the levels P(x < 100) = 0.300 to P(x <= 100) = 0.703; the target is uniform on [0, 1]
    assert mapped.ravel()[0] == pytest.approx((0.300 + 0.703) / 2, abs=0.005)



@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_histogram_matching_of_integer_rasters_is_np_interp_per_pixel(dtype):
    """Integer rasters go through a table of np.interp at every possible value: the same float32 pixels."""
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    raster = rng.integers(info.min, info.max, (2, 30, 40), endpoint=True).astype(dtype)
    source = stats_of(raster.astype(np.float64))
    target = stats_of(rng.normal(0, 3, (2, 1000)))
    stylizer = HistogramMatchingStylizer(source, target)
    expected = np.stack([np.interp(raster[b].astype(np.float64), xp, fp) for b, (xp, fp) in enumerate(stylizer._maps)])
    assert np.array_equal(stylizer.stylize(raster), expected.astype(np.float32))

# --- gray world and identity -------------------------------------------------------------------
def test_gray_world_output_band_means_equal_target_means():
    rng = np.random.default_rng(2)
    source_image = rng.uniform(0, 1, (3, 20, 30)) * np.array([100.0, 80.0, 60.0])[:, None, None]
    target_image = rng.gamma(2.0, 1.0, (3, 20, 30)) * np.array([30.0, 50.0, 90.0])[:, None, None]
    stylizer = GrayWorldStylizer(stats_of(source_image), stats_of(target_image))
    out = stylizer.stylize(source_image.astype(np.float32))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), target_image.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out / source_image, np.broadcast_to(stylizer.gains[:, None, None], out.shape), rtol=1e-5)


def test_identity_returns_the_source_pixels_as_float32():
    image = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    out = IdentityStylizer(2).stylize(image)
    assert out.dtype == np.float32 and np.array_equal(out, image)


def test_per_band_baselines_refuse_different_band_counts_and_wrong_inputs():
    three, four = stats_of(np.ones((3, 2, 2)) + np.arange(4).reshape(2, 2)), stats_of(np.ones((4, 2, 2)))
    for cls in (GrayWorldStylizer, HistogramMatchingStylizer):
        with pytest.raises(ValueError, match="equal band counts"):
            cls(three, four)
    with pytest.raises(ValueError, match=r"expected \(3, H, W\)"):
        GrayWorldStylizer(three, three).stylize(np.ones((4, 5, 5)))


def test_registry_builds_the_baselines_alike():
    rng = np.random.default_rng(3)
    src, tgt = stats_of(rng.uniform(1, 2, (3, 8, 8))), stats_of(rng.uniform(3, 5, (3, 8, 8)))
    assert set(STYLIZERS) == {"identity", "histogram_matching", "gray_world", "colormapgan", "cyclegan", "semi2i"}
    for name in ("identity", "histogram_matching", "gray_world"):
        stylizer = load_stylizer(name, source_stats=src, target_stats=tgt)
        assert stylizer.name == name and (stylizer.in_bands, stylizer.out_bands) == (3, 3)
        assert stylizer.stylize(np.ones((3, 5, 7), dtype=np.uint8)).shape == (3, 5, 7)
    with pytest.raises(ValueError, match="unknown stylizer 'munit'"):
        load_stylizer("munit", source_stats=src, target_stats=tgt)
    with pytest.raises(ValueError, match="needs checkpoint="):
        load_stylizer("semi2i", source_stats=src, target_stats=tgt)


# --- SemI2I ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 3→4-band SemI2I after a few steps (non-zero global statistics), and its checkpoint."""
    cfg = SemI2IConfig(in_bands_a=3, in_bands_b=4, base_width=4, n_res_blocks=1, disc_width=4, patch_size=32)
    step = SemI2IStep.create(cfg)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        step(torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(1, 4, 32, 32, generator=gen) * 2 - 1)
    path = step.save(tmp_path_factory.mktemp("ckpt") / "semi2i.pt")
    rng = np.random.default_rng(4)
    source = stats_of(rng.uniform(0, 255, (3, 16, 16)))
    target = stats_of(rng.normal(1000, 200, (4, 16, 16)))
    return step, path, source, target


def test_semi2i_stylizer_pipes_raw_pixels_through_the_global_style(trained):
    step, _, source, target = trained
    stylizer = SemI2IStylizer(step.models.generator, step.style, source, target, tile_size=32, overlap=8)
    image = np.random.default_rng(5).integers(0, 256, (3, 13, 21)).astype(np.uint8)  # smaller than a tile
    out = stylizer.stylize(image)
    assert out.shape == (4, 13, 21) and out.dtype == np.float32
    fake = step.models.generator.stylize(torch.from_numpy(source.to_unit_range(image))[None], "a", step.style)
    np.testing.assert_allclose(out, target.from_unit_range(fake[0].numpy()), rtol=1e-5, atol=1e-3)
    assert np.all(out >= target.low[:, None, None] - 1e-3) and np.all(out <= target.high[:, None, None] + 1e-3)


def test_semi2i_stylizer_is_deterministic_and_survives_a_checkpoint_round_trip(trained):
    step, path, source, target = trained
    image = np.random.default_rng(6).uniform(0, 255, (3, 45, 70))  # several tiles, odd size
    in_memory = SemI2IStylizer(step.models.generator, step.style, source, target, tile_size=32, overlap=8)
    first = in_memory.stylize(image)
    assert first.shape == (4, 45, 70)
    assert np.array_equal(first, in_memory.stylize(image))
    reloaded = load_stylizer("semi2i", source_stats=source, target_stats=target, checkpoint=path, overlap=8)
    assert reloaded.tile_size == 32  # the training patch size
    assert np.array_equal(first, reloaded.stylize(image))


def test_semi2i_stylizer_in_bf16_is_close_to_fp32_and_not_the_same_arithmetic(trained):
    step, path, source, target = trained
    image = np.random.default_rng(6).uniform(0, 255, (3, 45, 70))
    fp32 = load_stylizer("semi2i", source_stats=source, target_stats=target, checkpoint=path, overlap=8).stylize(image)
    bf16 = load_stylizer("semi2i", source_stats=source, target_stats=target, checkpoint=path, overlap=8,
                         precision="bf16").stylize(image)
    unit = (target.from_unit_range(np.ones((4, 1, 1), np.float32)) - target.from_unit_range(-np.ones((4, 1, 1), np.float32)))
    gap = np.abs(bf16 - fp32) / unit  # as a fraction of the output range
    assert bf16.dtype == np.float32 and 0 < gap.max() < 0.05 and gap.mean() < 0.01
    with pytest.raises(ValueError, match="precision must be one of"):
        load_stylizer("semi2i", source_stats=source, target_stats=target, checkpoint=path, overlap=8, precision="fp16")


def test_semi2i_stylizer_reverse_direction(trained):
    step, path, source, target = trained
    reverse = SemI2IStylizer.from_checkpoint(path, target, source, source="b", tile_size=32, overlap=8)
    assert (reverse.in_bands, reverse.out_bands) == (4, 3)
    assert reverse.stylize(np.full((4, 9, 40), 1000.0)).shape == (3, 9, 40)
    with pytest.raises(ValueError, match="source band stats have 3 bands"):
        SemI2IStylizer.from_checkpoint(path, source, target, source="b")


def test_tiles_cover_the_raster_and_blend_without_seams(trained, monkeypatch):
    assert _starts(100, 32, 8) == [0, 23, 45, 68] and _starts(20, 32, 8) == [0]
    assert _starts(56, 32, 8) == [0, 24]  # exactly the overlap
    ramp = _ramp(32, 8)
    assert ramp.min() > 0 and ramp[8:24].tolist() == [1.0] * 16
    # A pointwise "generator" must come out unchanged however the tiles overlap.
    _, _, source, _ = trained
    generator = SemI2IGenerator(3, 3, width=4, n_res_blocks=1)
    style = GlobalStyleStats(generator.style_channels)
    stylizer = SemI2IStylizer(generator, style, source, source, tile_size=32, overlap=8)
    monkeypatch.setattr(stylizer.generator, "stylize", lambda x, src, style: torch.tanh(x))
    image = np.random.default_rng(7).uniform(0, 255, (3, 70, 100))
    expected = source.from_unit_range(np.tanh(source.to_unit_range(image)))
    np.testing.assert_allclose(stylizer.stylize(image), expected, rtol=1e-5, atol=1e-3)
