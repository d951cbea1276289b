"""CycleGAN's 70×70 PatchGAN discriminator (the paper uses "the same architecture as in CycleGAN").

Layout of CycleGAN's ``NLayerDiscriminator`` with ``n_layers=3`` and instance norm: each output value
scores one 70×70 receptive field of the input as real or fake. Zero padding as in CycleGAN.
"""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """(N, bands, H, W) → (N, 1, H', W') raw scores (LSGAN: no sigmoid). Needs H, W >= 32."""

    def __init__(self, in_bands: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_bands, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last of these keeps the resolution (70×70 field)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),  # IN follows
                nn.InstanceNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
