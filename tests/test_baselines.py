"""The GAN baselines: ColorMapGAN (pointwise colour map, never moves an edge) and CycleGAN (cycle loss,
identity loss, image pool), their stylizers (checkpoint round trip, determinism, seamless tiling), their
profile sections and their Ray Train stage (2 workers, restart from a checkpoint = uninterrupted run)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from semi2i.config import ColorMapGANConfig, ConfigError, CycleGANConfig, load_profile
from semi2i.data.normalize import BandStats
from semi2i.losses import sobel
from semi2i.models.colormapgan import ColorMapGenerator
from semi2i.stylizers import ColorMapGANStylizer, CycleGANStylizer, load_stylizer
from semi2i.training.colormapgan_step import ColorMapGANStep
from semi2i.training.cyclegan_step import CycleGANStep, ImagePool
from semi2i.training.schedule import linear_decay_learning_rate
from test_semi2i_training import PALETTE_A, PALETTE_B, SIZE, synthetic_patches

TINY_CMG = ColorMapGANConfig(disc_width=4, patch_size=SIZE, lr_g=2e-2)
TINY_CYC = CycleGANConfig(base_width=4, n_res_blocks=1, disc_width=4, patch_size=SIZE, pool_size=3)


def stats_of(image: np.ndarray) -> BandStats:
    return BandStats.from_pixels(image.reshape(image.shape[0], -1))


def _three_band(patches: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p[:, :3] for p in patches]


@pytest.fixture(scope="module")
def domains():
    """8 tiny RGB patches per domain (B: the 4-band palette's first three bands, other colours)."""
    return synthetic_patches(8, 3, PALETTE_A, seed=0), _three_band(synthetic_patches(8, 4, PALETTE_B, seed=1))


@pytest.fixture(scope="module")
def colormap_trained(domains):
    a, b = domains
    step = ColorMapGANStep.create(TINY_CMG)
    history = [step.train_step(a[i % 8], b[(3 * i) % 8]) for i in range(20)]
    return step, history


# --- ColorMapGAN: a pointwise map ----------------------------------------------------------------
def test_colormap_starts_as_the_identity_and_is_pointwise():
    g = ColorMapGenerator(3, bins=256)
    x = torch.rand(2, 3, 9, 11) * 2 - 1
    torch.testing.assert_close(g(x), x)
    with torch.no_grad():  # any map: random weights (signs included) and biases
        g.weight.normal_(1.0, 0.7)
        g.bias.normal_(0.0, 0.3)
    y = g(x)
    # each output pixel depends only on that pixel's value: equal colours give equal colours ...
    shuffled = x.flatten(2)[..., torch.randperm(99)].reshape_as(x)
    twice = torch.cat([x, shuffled], dim=-1)  # every colour appears twice, at different places
    out = g(twice)
    torch.testing.assert_close(out[..., :11], y)
    torch.testing.assert_close(out[..., 11:], g(shuffled))
    # ... and a constant image maps to a constant image
    const = g(torch.full((1, 3, 16, 16), 0.3) * torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1))
    assert torch.all(const == const[..., :1, :1])
    # parameters: one (w, b) per band and per bin, nothing else
    assert sum(p.numel() for p in g.parameters()) == 2 * 3 * 256


def test_colormap_lookup_matches_the_formula_and_its_gradient_is_reproducible():
    """out_c = w[c, bin(x_c)]·x_c + b[c, bin(x_c)], checked by hand on a 2-band image; and the LUT
    gradient is bit-identical over repeated backward passes on 2 threads (advanced indexing was not)."""
    g = ColorMapGenerator(2, bins=5)  # bins at -1, -0.5, 0, 0.5, 1
    with torch.no_grad():
        g.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, -2.0, -3.0, -4.0, -5.0]]))
        g.bias.copy_(torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4], [1.0, 1.1, 1.2, 1.3, 1.4]]))
    x = torch.tensor([[[[-1.0, 0.1]], [[0.5, 0.9]]]])  # band 0 → bins 0, 2; band 1 → bins 3, 4
    expected = torch.tensor([[[[1 * -1.0 + 0.0, 3 * 0.1 + 0.2]], [[-4 * 0.5 + 1.3, -5 * 0.9 + 1.4]]]])
    torch.testing.assert_close(g(x), expected)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = ColorMapGenerator(3, bins=256)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(8, 3, 128, 128, generator=gen) * 2 - 1
        weights = torch.randn(8, 3, 128, 128, generator=gen)
        grads = set()
        for _ in range(5):
            g.zero_grad()
            (g(x) * weights).sum().backward()
            grads.add(g.weight.grad.numpy().tobytes() + g.bias.grad.numpy().tobytes())
        assert len(grads) == 1
    finally:
        torch.set_num_threads(threads)


def test_colormapgan_learns_and_only_the_lut_changes_the_image(colormap_trained):
    step, history = colormap_trained
    assert step.step == 20 and all(np.isfinite(list(h.values())).all() for h in history)
    g = step.models.generator
    assert not torch.allclose(g.weight, torch.ones_like(g.weight))  # it moved away from the identity
    assert {n for n, _ in g.named_parameters()} == {"weight", "bias"}
    for p in step.models.disc_b.parameters():
        assert p.grad is not None


def test_colormapgan_never_moves_an_edge(colormap_trained):
    step, _ = colormap_trained
    g = step.models.generator
    x = torch.full((1, 3, SIZE, SIZE), -0.4)  # a vertical step edge between two colours
    x[..., :, SIZE // 2 :] = torch.tensor([0.6, -0.1, 0.2]).view(1, 3, 1, 1)
    with torch.no_grad():
        y = g(x)
    gx, gy = sobel(x)[0], sobel(y)[0]  # (bands, d/dx d/dy, H, W)
    # A two-colour image maps to an affine function of itself per band (out = α·x + β), so the
    # output's gradients are the input's times α: edges exactly where they were, parallel, none new.
    for band in range(3):
        edge = gx[band].abs().sum(dim=0) > 1e-6  # (Sobel of a flat area is 0 up to float rounding)
        assert edge.any()
        assert gy[band][:, ~edge].abs().max() < 1e-6, "an edge appeared where the input has none"
        ratio = gy[band, 0][edge] / gx[band, 0][edge]
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-4, atol=1e-6)
        assert gy[band, 1].abs().max() < 1e-6


def test_colormapgan_needs_equal_band_counts(tmp_path):
    with pytest.raises(ValueError, match="equal band counts"):
        ColorMapGANStep.create(dataclasses.replace(TINY_CMG, in_bands_b=4))
    three, four = stats_of(np.random.default_rng(0).uniform(0, 9, (3, 4, 4))), stats_of(np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="equal band counts"):
        ColorMapGANStylizer(ColorMapGenerator(3), three, four)
    # the pipeline skips it (like histogram matching) when the cities' band counts differ
    from semi2i.adapt_config import STYLIZED_METHODS
    from semi2i.pipeline import AdaptRun

    run = AdaptRun.__new__(AdaptRun)
    profile = SimpleNamespace(semi2i=SimpleNamespace(seeds=1))
    run.cfg, run.run_dir = SimpleNamespace(methods=("source_only", *STYLIZED_METHODS), profile=profile), tmp_path
    for method in ("colormapgan", "cyclegan", "semi2i"):
        (tmp_path / f"{method}.pt").touch()
    kept = run._stylized_methods(SimpleNamespace(num_bands=3), SimpleNamespace(num_bands=4))
    assert kept == ["cyclegan", "semi2i"]
    assert run._stylized_methods(SimpleNamespace(num_bands=3), SimpleNamespace(num_bands=3)) == list(STYLIZED_METHODS)
    (tmp_path / "cyclegan.pt").unlink()  # its training stage was skipped: no stylizing, no fine-tuning
    assert "cyclegan" not in run._stylized_methods(SimpleNamespace(num_bands=3), SimpleNamespace(num_bands=3))


# --- CycleGAN ------------------------------------------------------------------------------------
def test_cycle_loss_falls_over_a_few_dozen_steps():
    a = synthetic_patches(8, 3, PALETTE_A, seed=0)
    b = synthetic_patches(8, 4, PALETTE_B, seed=1)
    step = CycleGANStep.create(dataclasses.replace(TINY_CYC, in_bands_a=3, in_bands_b=4, base_width=8, disc_width=8, lr=1e-3))
    history = [step.train_step(a[i % 8], b[(3 * i) % 8]) for i in range(40)]
    first = sum(h["L_cycle"] for h in history[:5]) / 5
    last = sum(h["L_cycle"] for h in history[-5:]) / 5
    assert last < 0.75 * first, f"L_cycle: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("bands_b", [3, 4])
def test_cyclegan_step_reaches_every_parameter_and_identity_needs_equal_bands(bands_b):
    step = CycleGANStep.create(dataclasses.replace(TINY_CYC, in_bands_b=bands_b))
    losses = step.train_step(torch.rand(1, 3, SIZE, SIZE) * 2 - 1, torch.rand(1, bands_b, SIZE, SIZE) * 2 - 1)
    assert set(losses) == {*CycleGANStep.loss_keys, "lr"}
    assert (losses["L_idt"] > 0) == (bands_b == 3)
    assert losses["L_G"] == pytest.approx(losses["L_adv_G"] + 10 * losses["L_cycle"] + 5 * losses["L_idt"], rel=1e-5)
    for name in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
        for pname, p in getattr(step.models, name).named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}.{pname}"
    out = step.stylize(torch.rand(1, 3, 13, 22) * 2 - 1)  # any size at test time
    assert out.shape == (1, bands_b, 13, 22)


def test_image_pool_follows_the_reference():
    pool = ImagePool(2, seed=0)
    first = pool.query(torch.zeros(2, 1, 2, 2))  # filling: the new fakes come back and are stored
    assert torch.equal(first, torch.zeros(2, 1, 2, 2)) and len(pool.images) == 2
    seen = torch.cat([pool.query(torch.full((1, 1, 2, 2), float(i))) for i in range(1, 41)])[:, 0, 0, 0]
    new = seen == torch.arange(1, 41).float()
    assert 0.25 < new.float().mean() < 0.75  # about half current fakes, half older ones
    assert torch.all(seen[~new] < torch.arange(1, 41).float()[~new])
    assert ImagePool(0, seed=0).query(torch.ones(3, 1, 2, 2)).shape == (3, 1, 2, 2)


def test_cyclegan_resume_with_pools_equals_uninterrupted(tmp_path, domains):
    a, b = domains
    full = CycleGANStep.create(TINY_CYC)
    for i in range(6):  # pool of 3: from step 4 on the pool's RNG decides what D sees
        full.train_step(a[i], b[i])
    cut = CycleGANStep.create(TINY_CYC)
    for i in range(3):
        cut.train_step(a[i], b[i])
    path = cut.save(tmp_path / "cyclegan.pt")
    resumed = CycleGANStep.create(TINY_CYC)
    from semi2i.checkpoints import load_checkpoint

    resumed.load_state_dict(load_checkpoint(path))
    for i in range(3, 6):
        resumed.train_step(a[i], b[i])
    s_full, s_res = full.state_dict(), resumed.state_dict()
    for part in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
        for key, value in s_full[part].items():
            torch.testing.assert_close(s_res[part][key], value, rtol=1e-6, atol=1e-7, msg=f"{part}.{key}")
    torch.testing.assert_close(s_res["pools"][0]["fake_a"]["images"], s_full["pools"][0]["fake_a"]["images"])


def test_linear_decay_is_the_reference_rule():
    lrs = [linear_decay_learning_rate(e, 2e-4, 200, 100) for e in (0, 99, 100, 150, 199)]
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4 * 100 / 101, 2e-4 * 50 / 101, 2e-4 / 101])
    with pytest.raises(ValueError):
        linear_decay_learning_rate(200, 2e-4, 200, 100)


# --- stylizers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_stats():
    rng = np.random.default_rng(4)
    return stats_of(rng.uniform(0, 255, (3, 16, 16))), stats_of(rng.normal(1000, 200, (3, 16, 16)))


def test_colormapgan_stylizer_round_trips_its_checkpoint_and_is_deterministic(colormap_trained, raw_stats, tmp_path):
    step, _ = colormap_trained
    source, target = raw_stats
    path = step.save(tmp_path / "colormapgan.pt")
    image = np.random.default_rng(6).integers(0, 256, (3, 45, 70)).astype(np.uint8)
    in_memory = ColorMapGANStylizer(step.models.generator, source, target)
    first = in_memory.stylize(image)
    assert first.shape == (3, 45, 70) and first.dtype == np.float32
    assert np.array_equal(first, in_memory.stylize(image))
    reloaded = load_stylizer("colormapgan", source_stats=source, target_stats=target, checkpoint=path, overlap=8)
    assert np.array_equal(first, reloaded.stylize(image))
    # strips are only for memory: any strip height gives the same raster
    strips = ColorMapGANStylizer(step.models.generator, source, target, strip_pixels=7 * 70)
    assert np.array_equal(first, strips.stylize(image))
    expected = target.from_unit_range(step.stylize(torch.from_numpy(source.to_unit_range(image))[None])[0].numpy())
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    # pointwise on raw values too: equal source colours, equal stylized colours
    flat_in, flat_out = image.reshape(3, -1).T, first.reshape(3, -1).T
    _, first_seen, inverse = np.unique(flat_in, axis=0, return_index=True, return_inverse=True)
    assert np.array_equal(flat_out, flat_out[first_seen][inverse.ravel()])


def test_cyclegan_stylizer_round_trips_is_deterministic_and_seamless(domains, raw_stats, tmp_path, monkeypatch):
    a, b = domains
    source, target = raw_stats
    step = CycleGANStep.create(TINY_CYC)
    for i in range(2):
        step.train_step(a[i], b[i])
    path = step.save(tmp_path / "cyclegan.pt")
    image = np.random.default_rng(7).uniform(0, 255, (3, 45, 70))  # several tiles, odd size
    in_memory = CycleGANStylizer(step.models.gen_ab, source, target, tile_size=32, overlap=8)
    first = in_memory.stylize(image)
    assert first.shape == (3, 45, 70) and np.array_equal(first, in_memory.stylize(image))
    reloaded = load_stylizer("cyclegan", source_stats=source, target_stats=target, checkpoint=path, overlap=8)
    assert reloaded.tile_size == SIZE and np.array_equal(first, reloaded.stylize(image))
    reverse = CycleGANStylizer.from_checkpoint(path, target, source, source="b", overlap=8)
    assert reverse.stylize(np.full((3, 9, 40), 1000.0)).shape == (3, 9, 40)
    # seamless: a pointwise "generator" comes out unchanged however the tiles overlap
    monkeypatch.setattr(in_memory.generator, "translate", torch.tanh)
    expected = target.from_unit_range(np.tanh(source.to_unit_range(image)))
    np.testing.assert_allclose(in_memory.stylize(image), expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="needs checkpoint="):
        load_stylizer("cyclegan", source_stats=source, target_stats=target)


# --- profiles ------------------------------------------------------------------------------------
def test_profiles_hold_the_baselines_and_reject_unknown_keys():
    paper, quick = load_profile("paper"), load_profile("quick")
    c = paper.cyclegan
    assert (c.base_width, c.n_res_blocks, c.disc_width, c.patch_size) == (64, 9, 64, 256)
    assert (c.lambda_cycle, c.lambda_identity, c.pool_size, c.lr, c.beta1, c.beta2) == (10.0, 0.5, 50, 2e-4, 0.5, 0.999)
    assert (c.epochs, c.decay_epoch) == (200, 100)
    assert paper.colormapgan.bins == 256 and paper.colormapgan.patch_size == 256
    s = quick.semi2i
    for section in (quick.colormapgan, quick.cyclegan):  # the quick budget: SemI2I's step count and patch size
        assert section.patch_size == s.patch_size == quick.patch_size
        assert section.epochs * section.max_steps_per_epoch == s.epochs * s.max_steps_per_epoch
    assert quick.cyclegan.base_width < 64 and quick.cyclegan.n_res_blocks < 9
    with pytest.raises(ConfigError) as err:
        load_profile("quick", overrides={"colormapgan.binz": 8, "cyclegan.pool_size": -1, "cyclegan.patch_size": 30})
    text = str(err.value)
    assert "colormapgan.binz: unknown key (did you mean 'bins'?)" in text
    assert "cyclegan.pool_size: must be >= 0" in text and "cyclegan.patch_size: must be divisible by 4" in text


def test_finetune_schedule_per_profile_and_checked():
    assert load_profile("paper").unet.finetune_lr_schedule == "constant"  # the paper's Adam at a fixed rate
    assert load_profile("quick").unet.finetune_lr_schedule == "cosine"
    assert load_profile("paper").unet.train_lr_schedule == "constant"
    assert load_profile("quick").unet.train_lr_schedule == "cosine"  # the source U-net and the oracle too
    with pytest.raises(ConfigError, match=r"unet.finetune_lr_schedule: must be one of \['constant', 'cosine'\], got 'step'"):
        load_profile("quick", overrides={"unet.finetune_lr_schedule": "step"})


def test_semi2i_schedule_per_profile():
    paper, quick = load_profile("paper").semi2i, load_profile("quick").semi2i
    assert (paper.lr_schedule, paper.decay_epoch) == ("epoch", 15)  # the paper's Eq. 3, once per epoch
    assert (quick.lr_schedule, quick.decay_epoch) == ("step", 0)  # ours: a straight line to ~0 over every step


# --- Ray Train: 2 workers, a lost worker group restarts from the checkpoint --------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_cyclegan_on_two_workers_restarts_to_the_uninterrupted_result(tmp_path_factory, ray_session):
    from semi2i.data.ingest import ingest_city
    from semi2i.demo.cities import make_demo_cities
    from semi2i.checkpoints import CYCLEGAN_CHECKPOINT, load_checkpoint
    from semi2i.training.distributed import Scaling, fit_cyclegan

    root = tmp_path_factory.mktemp("cities")
    files = make_demo_cities(root / "data", size=96, rasters_per_city=1, seed=1)
    stores = [ingest_city([str(p) for p in f.images], root / f"{name}.zarr", min_size=32, progress=False).path
              for name, f in files.items()]
    cfg = dataclasses.replace(TINY_CYC, pool_size=1, epochs=2, decay_epoch=1, max_steps_per_epoch=6, checkpoint_every=2,
                              log_every=1, preview_every=3, seed=3)
    two = Scaling(num_workers=2, threads_per_worker=1, max_failures=1)
    reference_run = tmp_path_factory.mktemp("reference")
    reference = fit_cyclegan(cfg, *stores, reference_run, overlap=8, scaling=two)
    run = tmp_path_factory.mktemp("restarted")
    summary = fit_cyclegan(cfg, *stores, run, overlap=8, scaling=two, crash_at_step=3)  # resumes from step 2
    assert reference["step"] == summary["step"] == 6 and (run / ".crashed-cyclegan-3").exists()
    expected = load_checkpoint(reference_run / CYCLEGAN_CHECKPOINT)
    got = load_checkpoint(run / CYCLEGAN_CHECKPOINT)
    assert len(got["pools"]) == 2  # both workers' pools are in the checkpoint
    for part in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
        for key, value in expected[part].items():
            torch.testing.assert_close(got[part][key], value, atol=1e-6, rtol=1e-4, msg=f"{part}.{key}")
    assert list((run / "previews").glob("cyclegan_step*.png")) and list((run / "tensorboard" / "cyclegan").iterdir())
