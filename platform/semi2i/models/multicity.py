"""The multi-city SemI2I model: ONE encoder and ONE decoder for every city, per-city global statistics,
one PatchGAN with an output channel per city.

In SemI2I a domain's style *is* its embedding's μ, σ (injected by AdaIN), so the encoder/decoder need
not be per city: parameters stay O(1) in the number of cities, every city's patches train the same
encoder, and one generator serves every target (``dec(AdaIN(enc(x_s), μ_t, σ_t), low_s)``). The price:
all cities need the same band count. Design notes: :mod:`semi2i.multicity`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semi2i.models.discriminator import PatchDiscriminator
from semi2i.models.semi2i import Decoder, Encoder, check_input, six_passes, stylize_padded


class MultiCityStyleStats(nn.Module):
    """Global μ, σ of every city's embeddings (rows = cities), each row estimated by Algorithm 1.

    A separate module (not inside the DDP-wrapped generator), as :class:`GlobalStyleStats`.
    """

    def __init__(self, num_cities: int, channels: int, d_rate: float = 0.95):
        super().__init__()
        self.d_rate = float(d_rate)
        self.register_buffer("mu", torch.zeros(num_cities, channels))  # Algorithm 1: μ_g ← 0, σ_g ← 0
        self.register_buffer("sigma", torch.zeros(num_cities, channels))

    @torch.no_grad()
    def update(self, city: int, mu: Tensor, sigma: Tensor) -> None:
        """Algorithm 1 for ``city`` (one iteration that saw it): g ← d·g + (1 − d)·(this step's value)."""
        d = self.d_rate
        for buf, value in ((self.mu, mu), (self.sigma, sigma)):
            if value.shape != buf.shape[1:]:
                raise ValueError(f"style statistic of shape {tuple(value.shape)}, expected {tuple(buf.shape[1:])}")
            buf[city].mul_(d).add_((1.0 - d) * value.to(buf))

    def style(self, city: int) -> tuple[Tensor, Tensor]:
        return self.mu[city], self.sigma[city]


class MultiCityGenerator(nn.Module):
    """One encoder and one decoder shared by every city; city styles come from AdaIN statistics."""

    def __init__(self, bands: int, width: int = 64, n_res_blocks: int = 4, eps: float = 1e-5,
                 style_path: str = "normalised"):
        super().__init__()
        self.bands, self.eps = bands, eps
        self.enc = Encoder(bands, width, n_res_blocks, style_path)
        self.dec = Decoder(bands, width, style_path=style_path)
        self.style_channels = self.enc.out_channels

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """SemI2I's six passes for a batch of city i (``a``) and one of city j (``b``), shared networks.

        Same keys as :meth:`SemI2IGenerator.forward`, so :func:`semi2i.losses.generator_loss` applies.
        """
        for name, x in (("a", a), ("b", b)):
            check_input(x, self.bands, name, training=True)
        return six_passes(a, b, self.enc, self.enc, self.dec, self.dec, self.eps)

    @torch.no_grad()
    def stylize(self, image: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
        """Test time: ``image``'s content with the (global, (C,)) style ``mu``, ``sigma``; any H×W, eval mode."""
        check_input(image, self.bands, "source", training=False)
        return stylize_padded(self, self.enc, self.dec, image, mu, sigma)


class MultiCityDiscriminator(PatchDiscriminator):
    """CycleGAN's 70×70 PatchGAN with one output channel per city (LSGAN scores, no sigmoid)."""

    def __init__(self, bands: int, num_cities: int, ndf: int = 64, n_layers: int = 3):
        super().__init__(bands, ndf, n_layers)
        last = self.net[-1]
        self.net[-1] = nn.Conv2d(last.in_channels, num_cities, 4, stride=1, padding=1)
