"""SemI2I's losses (paper §2 "Training"): the terms and their composition into Eq. 1 and Eq. 2.

* L_cross = |A − A''|₁ + |B − B''|₁, L_self = |A − A'|₁ + |B − B'|₁ (mean absolute error per image).
* L_grad  = |∇A − ∇fake A|₁ + |∇B − ∇fake B|₁ with Sobel gradients.
* L_tone  = (1 − ρ(A, fake A)) + (1 − ρ(B, fake B)), ρ the Pearson correlation of regional brightness:
  our addition (λ5, off in the paper profile). L_grad keeps edges but barely sees the level of flat
  regions, so the GAN can paint black water light and bright land grey and still pay little; any
  faithful restyling keeps which regions are brighter, so ρ is high for it and −1 for an inversion.
  A fully inverted translation is a stationary point of ρ, so the term is a barrier that holds from the
  first step (translations start in order), not a repair of a finished inversion.
* LSGAN (Mao et al. 2017) adversarial terms in CycleGAN's form: G: mean (D(fake) − 1)²,
  D: ½·[mean (D(real) − 1)² + mean D(fake)²]. D_A judges domain A's band space (real A vs fake B),
  D_B judges real B vs fake A.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Discriminator = Callable[[Tensor], Tensor]

# Fixed Sobel kernels, normalised by 8 (the sum of absolute weights) so that a ramp of slope s per
# pixel has gradient s: L_grad is then on the same scale as the L1 image terms it is weighted against.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_SOBEL_Y = _SOBEL_X.t().contiguous()


def sobel(x: Tensor) -> Tensor:
    """Per-band Sobel gradients: (N, C, H, W) → (N, C, 2, H, W) holding (d/dx, d/dy).

    Replicate padding keeps the size without inventing edges at the border.
    """
    n, c, h, w = x.shape
    kernel = torch.stack([_SOBEL_X, _SOBEL_Y]).to(x)[:, None]  # (2, 1, 3, 3)
    padded = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel).reshape(n, c, 2, h, w)


def gradient_l1(real: Tensor, fake: Tensor) -> Tensor:
    """L1 distance between the Sobel gradients of an image and its translation.

    With equal band counts (the paper's RGB↔RGB) bands are compared one to one. When the domains have
    different band counts there is no band correspondence, so the gradients of the band means are
    compared instead (the structure, not the colours, must match).
    """
    if real.shape[1] != fake.shape[1]:
        real, fake = real.mean(dim=1, keepdim=True), fake.mean(dim=1, keepdim=True)
    return F.l1_loss(sobel(fake), sobel(real))


def tone_correlation(real: Tensor, fake: Tensor, pool: int = 4) -> Tensor:
    """Batch-mean Pearson correlation between the regional brightness of images and their translations.

    Brightness is the band mean (defined for any band counts on the two sides), averaged over
    ``pool``×``pool`` blocks so that texture and sensor noise, which a restyling may change, do not
    count; only which regions are brighter does. A flat image has no order to keep: ρ → 0 there.
    """
    def regional(x: Tensor) -> Tensor:
        lum = F.avg_pool2d(x.mean(dim=1, keepdim=True), pool) if min(x.shape[-2:]) >= pool else x.mean(dim=1, keepdim=True)
        lum = lum.flatten(1)
        return lum - lum.mean(dim=1, keepdim=True)

    r, f = regional(real), regional(fake)
    cov = (r * f).mean(dim=1)
    rho = cov / torch.sqrt(r.pow(2).mean(dim=1) * f.pow(2).mean(dim=1) + 1e-8)
    return rho.mean()


def reconstruction_l1(real: Tensor, reconstruction: Tensor) -> Tensor:
    """Mean absolute error between an image and its (self or cross) reconstruction."""
    return F.l1_loss(reconstruction, real)


def lsgan_generator(fake_scores: Tensor) -> Tensor:
    """LSGAN generator loss: push D's scores of fakes towards the "real" label 1."""
    return torch.mean((fake_scores - 1.0) ** 2)


def lsgan_discriminator(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """LSGAN discriminator loss: real → 1, fake → 0 (halved, as in CycleGAN)."""
    return 0.5 * (torch.mean((real_scores - 1.0) ** 2) + torch.mean(fake_scores**2))


def generator_loss(
    a: Tensor,
    b: Tensor,
    out: dict[str, Tensor],
    d_a: Discriminator,
    d_b: Discriminator,
    lambdas: tuple[float, float, float, float],
    lambda_tone: float = 0.0,
) -> dict[str, Tensor]:
    """Eq. 1: L_G = λ1·L_cross + λ2·L_self + λ3·L_grad + λ4·L_adv_G, plus λ5·L_tone (ours, 0 = the paper).

    ``out`` is :meth:`SemI2IGenerator.forward`'s dict. Returns every term and ``"total"`` (= L_G).
    """
    l1, l2, l3, l4 = lambdas
    terms = {
        "cross": reconstruction_l1(a, out["cross_a"]) + reconstruction_l1(b, out["cross_b"]),
        "self": reconstruction_l1(a, out["self_a"]) + reconstruction_l1(b, out["self_b"]),
        "grad": gradient_l1(a, out["fake_a"]) + gradient_l1(b, out["fake_b"]),
        # fake B lives in A's band space and is judged by D_A; fake A by D_B.
        "adv_g": lsgan_generator(d_a(out["fake_b"])) + lsgan_generator(d_b(out["fake_a"])),
        "tone": (1.0 - tone_correlation(a, out["fake_a"])) + (1.0 - tone_correlation(b, out["fake_b"])),
    }
    terms["total"] = l1 * terms["cross"] + l2 * terms["self"] + l3 * terms["grad"] + l4 * terms["adv_g"]
    if lambda_tone:
        terms["total"] = terms["total"] + lambda_tone * terms["tone"]
    return terms


def discriminator_loss(
    a: Tensor,
    b: Tensor,
    fake_a: Tensor,
    fake_b: Tensor,
    d_a: Discriminator,
    d_b: Discriminator,
    lambda_adv: float,
) -> dict[str, Tensor]:
    """Eq. 2: L_D = λ4·L_adv_D, L_adv_D summing D_A (A vs fake B) and D_B (B vs fake A).

    Pass detached fakes: this loss must not reach the generator. Returns ``"adv_d"`` and ``"total"``.
    """
    adv_d = lsgan_discriminator(d_a(a), d_a(fake_b)) + lsgan_discriminator(d_b(b), d_b(fake_a))
    return {"adv_d": adv_d, "total": lambda_adv * adv_d}
