"""SemI2I generator pieces: AdaIN, style statistics (Algorithm 1), shapes, test-time stylize."""

import pytest
import torch

from semi2i.models.discriminator import PatchDiscriminator
from semi2i.models.semi2i import (
    Decoder,
    GlobalStyleStats,
    SemI2IGenerator,
    adain,
    channel_stats,
)

EPS = 1e-5


def tiny_generator(bands_a=3, bands_b=4, width=4, n_res=1, seed=0):
    torch.manual_seed(seed)
    return SemI2IGenerator(bands_a, bands_b, width=width, n_res_blocks=n_res, eps=EPS)


def test_channel_stats_hand_values():
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).reshape(1, 1, 2, 2)
    mu, sigma = channel_stats(x, EPS)
    assert mu.shape == sigma.shape == (1, 1)
    assert mu.item() == pytest.approx(3.0)
    assert sigma.item() == pytest.approx((5.0 + EPS) ** 0.5)  # biased variance of 0,2,4,6 is 5


@pytest.mark.parametrize("global_stats", [False, True])
def test_adain_output_has_target_mean_and_std_per_channel(global_stats):
    torch.manual_seed(0)
    content = torch.randn(2, 5, 9, 7) * 3.0 + 1.5
    mu = torch.tensor([0.0, -1.0, 2.0, 0.5, 10.0])
    sigma = torch.tensor([1.0, 0.5, 2.0, 3.0, 0.1])
    if not global_stats:  # per-sample statistics (N, C)
        mu, sigma = torch.stack([mu, mu + 1]), torch.stack([sigma, sigma * 2])
    out = adain(content, mu, sigma, EPS)
    expect_mu = mu.expand(2, 5)
    expect_sigma = sigma.expand(2, 5)
    torch.testing.assert_close(out.mean(dim=(2, 3)), expect_mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), expect_sigma, rtol=1e-4, atol=0)


def test_algorithm1_on_a_hand_computed_sequence():
    stats = GlobalStyleStats(channels=2, d_rate=0.95)
    for name in ("mu_a", "sigma_a", "mu_b", "sigma_b"):
        assert torch.equal(getattr(stats, name), torch.zeros(2))  # initialised to 0
    t = torch.tensor
    stats.update(t([1.0, 2.0]), t([4.0, 8.0]), t([-1.0, 0.0]), t([2.0, 2.0]))  # step 1: μ_A, σ_A, μ_B, σ_B
    stats.update(t([3.0, 4.0]), t([0.0, 8.0]), t([1.0, 0.0]), t([2.0, 2.0]))  # step 2
    # g1 = 0.05 x1; g2 = 0.95 g1 + 0.05 x2
    torch.testing.assert_close(stats.mu_a, torch.tensor([0.1975, 0.295]))
    torch.testing.assert_close(stats.sigma_a, torch.tensor([0.19, 0.78]))
    torch.testing.assert_close(stats.mu_b, torch.tensor([0.0025, 0.0]))
    torch.testing.assert_close(stats.sigma_b, torch.tensor([0.195, 0.195]))
    assert set(stats.state_dict()) == {"mu_a", "sigma_a", "mu_b", "sigma_b"}  # saved in checkpoints
    mu, sigma = stats.style("a")
    assert mu is stats.mu_a and sigma is stats.sigma_a


@pytest.mark.parametrize("bands_a,bands_b", [(3, 4), (3, 1)])
def test_six_passes_shapes_with_different_band_counts(bands_a, bands_b):
    gen = tiny_generator(bands_a, bands_b)
    a, b = torch.rand(2, bands_a, 16, 24) * 2 - 1, torch.rand(2, bands_b, 16, 24) * 2 - 1
    out = gen(a, b)
    # fake A is A's content in B's style, so it has B's bands; fake B has A's bands.
    assert out["fake_a"].shape == (2, bands_b, 16, 24)
    assert out["fake_b"].shape == (2, bands_a, 16, 24)
    assert out["self_a"].shape == out["cross_a"].shape == a.shape
    assert out["self_b"].shape == out["cross_b"].shape == b.shape
    for key in ("mu_a", "sigma_a", "mu_b", "sigma_b"):
        assert out[key].shape == (2, 16)  # 4 × width channels per sample
    for key in ("fake_a", "fake_b", "self_a", "self_b", "cross_a", "cross_b"):
        assert out[key].abs().max() <= 1.0  # tanh


def test_training_forward_rejects_sizes_not_divisible_by_4():
    gen = tiny_generator()
    with pytest.raises(ValueError, match="multiples of 4"):
        gen(torch.zeros(1, 3, 18, 16), torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        gen(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("bands_a,bands_b", [(3, 4), (3, 1)])
@pytest.mark.parametrize("size", [(13, 17), (8, 8), (5, 30), (1, 1)])
def test_stylize_any_size_both_directions(bands_a, bands_b, size):
    gen = tiny_generator(bands_a, bands_b)
    stats = GlobalStyleStats(gen.style_channels)
    stats.update(*(torch.rand(4, gen.style_channels) + 0.5))
    a = torch.rand(1, bands_a, *size) * 2 - 1
    b = torch.rand(1, bands_b, *size) * 2 - 1
    assert gen.stylize(a, "a", stats).shape == (1, bands_b, *size)
    assert gen.stylize(b, "b", stats).shape == (1, bands_a, *size)


def test_stylize_is_deterministic_and_uses_only_the_global_target_style():
    gen = tiny_generator().train()
    stats = GlobalStyleStats(gen.style_channels)
    stats.update(*(torch.rand(4, gen.style_channels) + 0.5))
    a = torch.rand(2, 3, 12, 20) * 2 - 1
    first = gen.stylize(a, "a", stats)
    assert torch.equal(first, gen.stylize(a, "a", stats))
    assert gen.training  # mode restored
    # exactly dec_B(AdaIN(enc_A(A), μ_gB, σ_gB)) with the content encoder's low-level features
    with torch.no_grad():
        emb, low = gen.enc_a(a)
        manual = gen.dec_b(adain(emb, stats.mu_b, stats.sigma_b, EPS), low)
    torch.testing.assert_close(first, manual)
    # the A statistics play no part in fake A; the B statistics do
    stats.mu_a.add_(5.0)
    assert torch.equal(first, gen.stylize(a, "a", stats))
    stats.mu_b.add_(5.0)
    assert not torch.allclose(first, gen.stylize(a, "a", stats))


def test_decoder_concatenates_low_level_features_before_each_stage():
    torch.manual_seed(0)
    dec = Decoder(out_bands=3, width=4)
    assert [stage[0].in_channels for stage in dec.up] == [16 + 4, 8 + 4]
    emb, low = torch.randn(1, 16, 4, 4), torch.randn(1, 4, 16, 16)
    out = dec(emb, low)
    assert out.shape == (1, 3, 16, 16)
    assert not torch.allclose(out, dec(emb, low + 1.0 * torch.randn_like(low)))


def test_patchgan_output_grid_matches_cyclegan():
    d = PatchDiscriminator(in_bands=4, ndf=4)
    assert d(torch.zeros(1, 4, 256, 256)).shape == (1, 1, 30, 30)  # CycleGAN's 70×70 PatchGAN grid
    assert d(torch.zeros(2, 4, 32, 32)).shape == (2, 1, 2, 2)


# --- where the style lives: μ, σ of the embedding must carry it ("carried" style path) ---------
def _style_of(gen, x):
    with torch.no_grad():
        return channel_stats(gen.enc_a(x)[0], EPS)


def _restyled(x):
    """The input with the shifts a new city brings: brightness, contrast, haze, band order, inversion."""
    return {
        "darker": x - 0.5,
        "lower contrast": 0.3 * x,
        "haze": 0.5 * x + 0.45,
        "band order": x[:, [2, 0, 1]],
        "inverted": -x,
    }


def test_carried_style_statistics_respond_to_brightness_contrast_haze_and_band_order():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    gen = SemI2IGenerator(3, 3, width=8, n_res_blocks=2, eps=EPS, style_path="carried").eval()
    mu, sigma = _style_of(gen, x)
    scale_mu, scale_sigma = mu.abs().mean(), sigma.mean()
    for name, shifted in _restyled(x).items():
        mu2, sigma2 = _style_of(gen, shifted)
        moved = max(float((mu2 - mu).abs().max() / scale_mu), float((sigma2 - sigma).abs().max() / scale_sigma))
        assert moved > 0.1, f"{name}: μ/σ of the embedding moved only {moved:.3f} of their size"


def test_normalised_style_statistics_are_blind_to_brightness_contrast_and_haze():
    # Why "carried" exists: with instance norm after the first conv, an affine change of every band
    # (brightness, contrast, haze) leaves the embedding, so μ and σ, unchanged.
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    gen = SemI2IGenerator(3, 3, width=8, n_res_blocks=2, eps=EPS, style_path="normalised").eval()
    mu, sigma = _style_of(gen, x)
    for name in ("darker", "lower contrast", "haze"):
        mu2, sigma2 = _style_of(gen, _restyled(x)[name])
        torch.testing.assert_close(mu2, mu, atol=2e-3, rtol=1e-3, msg=name)
        torch.testing.assert_close(sigma2, sigma, atol=2e-3, rtol=1e-3, msg=name)


def test_fake_a_takes_b_style_from_b_statistics_in_the_six_passes():
    torch.manual_seed(1)
    gen = SemI2IGenerator(3, 3, width=8, n_res_blocks=1, eps=EPS, style_path="carried")
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    out = gen(a, b)
    with torch.no_grad():  # fake A = dec_B(AdaIN(enc_A(A), μ_B, σ_B), low_A), B's statistics from B
        emb_a, low_a = gen.enc_a(a)
        mu_b, sigma_b = channel_stats(gen.enc_b(b)[0], EPS)
        torch.testing.assert_close(out["mu_b"], mu_b)
        torch.testing.assert_close(out["fake_a"], gen.dec_b(adain(emb_a, mu_b, sigma_b, EPS), low_a))
    # B's style reaches fake A through μ_B, σ_B: a hazier B changes fake A (and nothing of A's own
    # reconstruction), which fails if the passes swap in A's statistics instead of B's.
    hazy = gen(a, 0.5 * b + 0.45)
    assert (hazy["fake_a"] - out["fake_a"]).abs().mean() > 1e-3
    torch.testing.assert_close(hazy["self_a"], out["self_a"])


def test_unknown_style_path_is_refused():
    with pytest.raises(ValueError, match="style_path"):
        SemI2IGenerator(3, 3, width=4, n_res_blocks=1, style_path="batch")
