"""CycleGAN's ResNet generator (Zhu et al. 2017; Johnson et al. 2016), as in the reference
implementation (pytorch-CycleGAN-and-pix2pix ``ResnetGenerator``): c7s1-w, d2w, d4w, ``n_res_blocks``
residual blocks at 4w, u2w, uw, c7s1-bands, tanh; instance norm, reflect padding, no dropout.

Differences from the reference, none changing what the network computes: convs that feed an instance
norm have no bias (the norm removes it; the reference keeps a dead bias), and the residual block is
SemI2I's (the same two 3×3 convs). Weights are initialised N(0, 0.02) as the reference does.
The discriminator is :class:`semi2i.models.discriminator.PatchDiscriminator` (70×70 PatchGAN).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semi2i.models.semi2i import ResidualBlock, pad_to_multiple


class ResnetGenerator(nn.Module):
    """(N, in_bands, H, W) in [-1, 1] → (N, out_bands, H, W) in (-1, 1). Training sides: multiples of 4."""

    def __init__(self, in_bands: int, out_bands: int, width: int = 64, n_res_blocks: int = 9):
        super().__init__()
        self.in_bands, self.out_bands = in_bands, out_bands
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_bands, width, 7, bias=False), nn.InstanceNorm2d(width), nn.ReLU(True),
        ]
        for mult in (1, 2):  # d2w, d4w
            layers += [nn.Conv2d(width * mult, width * mult * 2, 3, stride=2, padding=1, bias=False),
                       nn.InstanceNorm2d(width * mult * 2), nn.ReLU(True)]
        layers += [ResidualBlock(4 * width) for _ in range(n_res_blocks)]
        for mult in (4, 2):  # u2w, uw
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=False),
                       nn.InstanceNorm2d(width * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_bands, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_bands:
            raise ValueError(f"expected (N, {self.in_bands}, H, W), got {tuple(x.shape)}")
        return self.net(x)

    @torch.no_grad()
    def translate(self, x: Tensor) -> Tensor:
        """Test time, any H×W: eval mode, reflect-padded to a multiple of 4 (>= 8), cropped back."""
        h, w = x.shape[-2:]
        was_training = self.training
        self.eval()
        try:
            out = self(pad_to_multiple(x))
        finally:
            self.train(was_training)
        return out[..., :h, :w]


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference's ``init_type='normal'``: conv weights N(0, gain), biases 0 (in place)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module

