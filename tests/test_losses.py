"""Loss terms with hand-computed values, and the composition of Eq. 1 and Eq. 2."""

import pytest
import torch

from semi2i.losses import (
    discriminator_loss,
    generator_loss,
    gradient_l1,
    lsgan_discriminator,
    lsgan_generator,
    reconstruction_l1,
    sobel,
    tone_correlation,
)


def step_edge(h=5, w=6, at=3):
    x = torch.zeros(1, 1, h, w)
    x[..., at:] = 1.0
    return x


def test_sobel_of_a_vertical_step_edge():
    g = sobel(step_edge())
    assert g.shape == (1, 1, 2, 5, 6)
    # d/dx = (1·Δ + 2·Δ + 1·Δ)/8 = 0.5 on both columns next to the step, 0 elsewhere; d/dy = 0.
    expected_row = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0])
    torch.testing.assert_close(g[0, 0, 0], expected_row.expand(5, 6))
    torch.testing.assert_close(g[0, 0, 1], torch.zeros(5, 6))


def test_sobel_of_a_horizontal_step_and_of_a_ramp():
    horizontal = step_edge(4, 6, at=2).transpose(-1, -2)  # ones from row 2 down
    g = sobel(horizontal)
    torch.testing.assert_close(g[0, 0, 1, :, 0], torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(g[0, 0, 0], torch.zeros(6, 4))
    ramp = torch.arange(5.0).expand(1, 1, 4, 5)  # slope 1 per pixel
    gx = sobel(ramp)[0, 0, 0]
    torch.testing.assert_close(gx[:, 1:-1], torch.ones(4, 3))  # normalised: slope 1 gives 1
    torch.testing.assert_close(gx[:, 0], torch.full((4,), 0.5))  # replicate border: half the slope


def test_sobel_is_per_band():
    x = torch.cat([step_edge(), torch.zeros(1, 1, 5, 6), -2 * step_edge()], dim=1)
    g = sobel(x)
    torch.testing.assert_close(g[:, 2], -2 * g[:, 0])
    assert g[:, 1].abs().sum() == 0


def test_gradient_l1():
    edge = step_edge(8, 8, at=4)
    # 2 columns × 8 rows of |0.5| among 2 × 64 gradient values
    assert gradient_l1(edge, torch.zeros_like(edge)).item() == pytest.approx(16 * 0.5 / 128)
    assert gradient_l1(edge, edge + 0.25).item() == 0.0  # a colour shift keeps the gradients
    # different band counts: the gradients of the band means are compared
    three = torch.cat([edge, 2 * edge, 0 * edge], dim=1)
    assert gradient_l1(three, edge).item() == 0.0
    assert gradient_l1(three, 0 * edge).item() == pytest.approx(16 * 0.5 / 128)


def _regions(seed=0):
    """An image of 4x4-pixel blocks of random brightness, 2 bands (the block is tone_correlation's pool)."""
    blocks = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return blocks.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)


def test_tone_correlation_is_one_for_restylings_and_minus_one_for_an_inversion():
    x = _regions()
    assert tone_correlation(x, x).item() == pytest.approx(1.0)
    assert tone_correlation(x, 0.3 * x - 0.5).item() == pytest.approx(1.0, abs=1e-4)  # darker, lower contrast (eps)
    assert tone_correlation(x, -x).item() == pytest.approx(-1.0)  # black painted white
    # a band swap keeps the band-mean brightness, so it keeps the order; another band count works too
    assert tone_correlation(x, x.flip(1)).item() == pytest.approx(1.0)
    assert tone_correlation(x, x.mean(dim=1, keepdim=True).expand(-1, 4, -1, -1)).item() == pytest.approx(1.0)
    # unrelated tones: a different random image of blocks scores near 0, flat fakes exactly 0
    assert abs(tone_correlation(x, _regions(seed=1)).item()) < 0.5
    assert tone_correlation(x, torch.zeros_like(x)).item() == 0.0


def test_tone_correlation_ignores_texture_inside_a_region():
    x = _regions()
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 0.4 - 0.2  # zero mean per 4x4 block
    assert tone_correlation(x, x + checker).item() == pytest.approx(1.0)
    # the correlation is per image, then averaged: one kept and one inverted image give 0
    both = torch.cat([x[:1], x[1:]])
    assert tone_correlation(both, torch.cat([x[:1], -x[1:]])).item() == pytest.approx(0.0, abs=1e-6)


def test_lsgan_and_reconstruction_values():
    assert lsgan_generator(torch.full((1, 1, 3, 3), 0.5)).item() == pytest.approx(0.25)
    assert lsgan_discriminator(torch.ones(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)).item() == 0.0
    assert lsgan_discriminator(torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3)).item() == pytest.approx(1.0)
    assert reconstruction_l1(torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), -0.75)).item() == pytest.approx(0.75)


def _const_disc(value):
    return lambda x: torch.full((x.shape[0], 1, 2, 2), value)


@pytest.mark.parametrize("lambdas,total", [((10, 10, 10, 1), 11.125), ((1, 2, 3, 4), 3.6875)])
def test_generator_loss_is_eq1(lambdas, total):
    a, b = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    out = {
        "cross_a": torch.full_like(a, 0.5), "cross_b": torch.zeros_like(b),  # L_cross = 0.5
        "self_a": torch.full_like(a, 0.25), "self_b": torch.full_like(b, -0.25),  # L_self = 0.5
        "fake_a": step_edge(8, 8, at=4), "fake_b": torch.zeros_like(a),  # L_grad = 0.0625
    }
    terms = generator_loss(a, b, out, _const_disc(0.5), _const_disc(0.5), lambdas)  # L_adv_G = 0.25 + 0.25
    assert terms["cross"].item() == pytest.approx(0.5)
    assert terms["self"].item() == pytest.approx(0.5)
    assert terms["grad"].item() == pytest.approx(0.0625)
    assert terms["adv_g"].item() == pytest.approx(0.5)
    assert terms["total"].item() == pytest.approx(total)


def test_generator_loss_adds_the_tone_term_only_with_its_weight():
    a, b = _regions(0), _regions(1)
    out = {"cross_a": a, "cross_b": b, "self_a": a, "self_b": b, "fake_a": -a, "fake_b": b}  # a inverted, b kept
    plain = generator_loss(a, b, out, _const_disc(1.0), _const_disc(1.0), (1, 1, 1, 1))
    assert plain["tone"].item() == pytest.approx(2.0)  # (1 - (-1)) + (1 - 1)
    weighted = generator_loss(a, b, out, _const_disc(1.0), _const_disc(1.0), (1, 1, 1, 1), lambda_tone=3.0)
    assert weighted["total"].item() == pytest.approx(plain["total"].item() + 3.0 * 2.0)


def test_generator_loss_sends_each_fake_to_the_discriminator_of_its_band_space():
    a, b = torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
    seen = {}

    def d_a(x):
        seen["a"] = x.shape[1]
        return torch.ones(1, 1, 2, 2)

    def d_b(x):
        seen["b"] = x.shape[1]
        return torch.ones(1, 1, 2, 2)

    out = {"cross_a": a, "cross_b": b, "self_a": a, "self_b": b}
    out.update(fake_a=torch.zeros_like(b), fake_b=torch.zeros_like(a))
    generator_loss(a, b, out, d_a, d_b, (10, 10, 10, 1))
    assert seen == {"a": 3, "b": 1}  # D_A judges fake B (A's bands), D_B judges fake A


def test_discriminator_loss_is_eq2():
    mean_disc = lambda x: x.mean(dim=1, keepdim=True)  # noqa: E731  scores = the image mean
    a, b = torch.ones(1, 3, 4, 4), torch.ones(1, 1, 4, 4)
    perfect = discriminator_loss(a, b, torch.zeros_like(b), torch.zeros_like(a), mean_disc, mean_disc, 1.0)
    assert perfect["adv_d"].item() == 0.0
    fooled = discriminator_loss(a, b, torch.ones_like(b), torch.ones_like(a), mean_disc, mean_disc, 2.0)
    assert fooled["adv_d"].item() == pytest.approx(1.0)  # 0.5·(0 + 1) per discriminator
    assert fooled["total"].item() == pytest.approx(2.0)  # λ4 · L_adv_D


def test_tone_term_gradient_pulls_a_drifting_translation_back_into_order():
    """Descending 1 − ρ from tones unrelated to the source (ρ ≈ 0, half-way to an inversion) restores the
    order. (An exactly inverted image is a stationary point of ρ: the term is a barrier kept from the
    first step, when translations are still in order, not a repair of a finished inversion.)"""
    x = _regions()
    fake = _regions(seed=1).clone().requires_grad_(True)
    start = tone_correlation(x, fake).item()
    opt = torch.optim.SGD([fake], lr=20.0)
    for _ in range(50):
        opt.zero_grad()
        (1 - tone_correlation(x, fake)).backward()
        opt.step()
    assert abs(start) < 0.5 and tone_correlation(x, fake).item() > 0.95
