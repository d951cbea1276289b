"""The SemI2I generator (paper §2): per-domain encoders and decoders, AdaIN, global style statistics.

Fig. 1 of the paper is not available; the layer choices below are the team's (``DESIGN.md``):

* Encoder: conv 7×7 s1 → w, conv 4×4 s2 → 2w, conv 4×4 s2 → 4w, residual blocks; instance norm, ReLU,
  reflect padding. The first conv's output is the *low-level feature* map (edges) handed to decoders.
* Decoder: two transposed-conv stages (×2 each) back to full size; before each stage the content
  encoder's low-level features are resized to that stage's input size and concatenated to it (the gray
  arrows of Fig. 1); a final 7×7 conv to the domain's bands and tanh.
* Convs that feed an instance norm have no bias: the norm removes it, so it could never learn.

Where the style lives (``style_path``). The paper says the embedding's per-channel μ and σ *carry* the
style. With instance norm after every encoder conv (``"normalised"``, the original layout) they cannot:
each stage's channel statistics are reset, so μ, σ of the embedding hardly move with the input's
brightness, contrast, haze or band order, AdaIN's swap changes little and the style ends up in the
decoder weights. ``"carried"`` makes the paper's statement true, following the two designs AdaIN comes
from: the embedding path of the encoder has no normalisation (as the VGG encoder of Huang & Belongie,
whose feature statistics define style there), the decoder normalises with layer norm instead of instance
norm (as MUNIT's AdaIN decoder: instance norm would erase the statistics AdaIN just injected), and the
low-level skip keeps its instance norm, so it hands the decoder the objects' footprint (edges) without
the content image's own brightness and contrast.

Naming: domain X's decoder produces images in X's style with X's band count. "fake A" is A's content
in B's style (B's bands), made by ``dec_b``; "fake B" is made by ``dec_a``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semi2i.config import STYLE_PATHS  # instance norm everywhere, or style carried by μ, σ (see above)

#: Side lengths the generator accepts are multiples of this (two stride-2 convs).
SIZE_MULTIPLE = 4
#: Smallest side the reflect paddings allow (the 4×-downsampled embedding must be at least 2×2).
MIN_SIZE = 8


def channel_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and std of a (N, C, H, W) embedding: the "style" μ, σ (N, C).

    σ = sqrt(var + eps), biased variance, as in AdaIN (Huang & Belongie 2017). Always fp32 (under bf16
    autocast too): bf16's 8-bit mantissa would round the variance and Algorithm 1's statistics.
    """
    x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    mu = x.mean(dim=(2, 3))
    sigma = torch.sqrt(x.var(dim=(2, 3), unbiased=False) + eps)
    return mu, sigma


def adain(content: Tensor, mu: Tensor, sigma: Tensor, eps: float) -> Tensor:
    """Adaptive instance normalisation: give ``content`` the per-channel mean ``mu`` and std ``sigma``.

    ``mu``/``sigma`` are (N, C) per-sample statistics or (C,) global statistics.
    """
    c_mu, c_sigma = channel_stats(content, eps)
    normalized = (content - c_mu[..., None, None]) / c_sigma[..., None, None]
    if mu.dim() == 1:
        mu, sigma = mu[None], sigma[None]
    return normalized * sigma[..., None, None] + mu[..., None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    """``"instance"`` (non-affine, per sample and channel), ``"layer"`` (per sample over C, H, W, with a
    per-channel affine: keeps the channels' relative statistics) or ``"none"``."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _conv_block(cin: int, cout: int, kernel: int, stride: int, norm: str = "instance") -> nn.Sequential:
    pad = (kernel - 1) // 2 if stride == 1 else 1
    return nn.Sequential(
        nn.ReflectionPad2d(pad),
        nn.Conv2d(cin, cout, kernel, stride=stride, bias=norm != "instance"),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3×3 convs with a skip connection (CycleGAN/MUNIT style), instance norm or none."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        bias = norm != "instance"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """One domain's encoder: (N, bands, H, W) → embedding (N, 4w, H/4, W/4) and low-level (N, w, H, W).

    ``style_path="carried"``: the embedding path has no normalisation (its μ, σ keep the input's
    style); the low-level map is the first conv's output after instance norm (style-free edges).
    """

    def __init__(self, in_bands: int, width: int, n_res_blocks: int, style_path: str = "normalised"):
        super().__init__()
        _check_style_path(style_path)
        self.carried = style_path == "carried"
        norm = "none" if self.carried else "instance"
        if self.carried:
            self.first = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_bands, width, 7))
            self.low_norm = nn.Sequential(nn.InstanceNorm2d(width), nn.ReLU())
        else:
            self.first = _conv_block(in_bands, width, 7, 1)
        self.down = nn.Sequential(_conv_block(width, 2 * width, 4, 2, norm), _conv_block(2 * width, 4 * width, 4, 2, norm))
        self.res = nn.Sequential(*(ResidualBlock(4 * width, norm) for _ in range(n_res_blocks)))
        self.out_channels = 4 * width
        self.low_channels = width

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.carried:
            first = self.first(x)
            return self.res(self.down(F.relu(first))), self.low_norm(first)
        low = self.first(x)
        return self.res(self.down(low)), low


class Decoder(nn.Module):
    """One domain's decoder: embedding (+ the content encoder's low-level features) → (N, bands, H, W)."""

    def __init__(self, out_bands: int, width: int, low_channels: int | None = None, style_path: str = "normalised"):
        super().__init__()
        _check_style_path(style_path)
        low = width if low_channels is None else low_channels
        norm = "layer" if style_path == "carried" else "instance"
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(cin + low, cout, 4, stride=2, padding=1, bias=norm != "instance"),
                _norm(norm, cout),
                nn.ReLU(inplace=True),
            )
            for cin, cout in ((4 * width, 2 * width), (2 * width, width))
        )
        self.out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, out_bands, 7), nn.Tanh())

    def forward(self, embedding: Tensor, low: Tensor) -> Tensor:
        x = embedding
        for stage in self.up:
            # Average-pool ("area") resizing: the stage inputs are exact 1/4 and 1/2 of the low map.
            guide = F.interpolate(low, size=x.shape[-2:], mode="area") if low.shape[-2:] != x.shape[-2:] else low
            x = stage(torch.cat([x, guide], dim=1))
        return self.out(x)


class GlobalStyleStats(nn.Module):
    """Global μ, σ of each domain's embeddings, estimated during training by Algorithm 1.

    Kept apart from :class:`SemI2IGenerator` so that DDP's buffer broadcast from rank 0 can never
    overwrite it: every replica updates it with the same all-reduced statistics instead.
    """

    def __init__(self, channels: int, d_rate: float = 0.95):
        super().__init__()
        self.d_rate = float(d_rate)
        # Algorithm 1: μ_g* ← 0, σ_g* ← 0
        for name in ("mu_a", "sigma_a", "mu_b", "sigma_b"):
            self.register_buffer(name, torch.zeros(channels))

    @torch.no_grad()
    def update(self, mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> None:
        """Algorithm 1, one training iteration: g ← d_rate·g + (1 − d_rate)·(this step's value).

        Each argument is (C,): the step's μ or σ, averaged over the batch (and over workers).
        """
        d = self.d_rate
        for buf, value in ((self.mu_a, mu_a), (self.sigma_a, sigma_a), (self.mu_b, mu_b), (self.sigma_b, sigma_b)):
            if value.shape != buf.shape:
                raise ValueError(f"style statistic of shape {tuple(value.shape)}, expected {tuple(buf.shape)}")
            buf.mul_(d).add_((1.0 - d) * value.to(buf))

    def style(self, domain: str) -> tuple[Tensor, Tensor]:
        """(μ_g, σ_g) of domain ``"a"`` or ``"b"``."""
        if domain not in ("a", "b"):
            raise ValueError(f"domain must be 'a' or 'b', got {domain!r}")
        return getattr(self, f"mu_{domain}"), getattr(self, f"sigma_{domain}")


class SemI2IGenerator(nn.Module):
    """Both domains' encoders and decoders; ``forward`` runs the six encoder→decoder passes.

    One module (not four) so that a single DistributedDataParallel wrapper synchronises all of them.
    """

    def __init__(self, in_bands_a: int, in_bands_b: int, width: int = 64, n_res_blocks: int = 4, eps: float = 1e-5,
                 style_path: str = "normalised"):
        super().__init__()
        self.bands = {"a": in_bands_a, "b": in_bands_b}
        self.eps = eps
        self.enc_a = Encoder(in_bands_a, width, n_res_blocks, style_path)
        self.enc_b = Encoder(in_bands_b, width, n_res_blocks, style_path)
        self.dec_a = Decoder(in_bands_a, width, style_path=style_path)
        self.dec_b = Decoder(in_bands_b, width, style_path=style_path)
        self.style_channels = self.enc_a.out_channels

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Training pass on one batch per domain (sides multiples of 4).

        Returns images ``fake_a`` (A content, B style), ``fake_b``, ``self_a`` (A'), ``self_b`` (B'),
        ``cross_a`` (A''), ``cross_b`` (B'') and the per-sample styles ``mu_a``, ``sigma_a``, ``mu_b``,
        ``sigma_b`` (N, C) of the real images' embeddings (the input of Algorithm 1).
        """
        for name, x in (("a", a), ("b", b)):
            check_input(x, self.bands[name], name, training=True)
        return six_passes(a, b, self.enc_a, self.enc_b, self.dec_a, self.dec_b, self.eps)

    @torch.no_grad()
    def stylize(self, image: Tensor, source: str, style: GlobalStyleStats) -> Tensor:
        """Test time: ``source``'s content in the other domain's *global* style (Algorithm 1 output).

        ``source="a"`` gives fake A = dec_B(AdaIN(enc_A(A), μ_gB, σ_gB)). Only global statistics are used,
        so the same input always gives the same output. Any H×W: the input is reflect-padded to a
        multiple of 4 (at least 8) and the output cropped back.
        """
        if source not in ("a", "b"):
            raise ValueError(f"source must be 'a' or 'b', got {source!r}")
        target = "b" if source == "a" else "a"
        check_input(image, self.bands[source], source, training=False)
        encoder = self.enc_a if source == "a" else self.enc_b
        decoder = self.dec_b if source == "a" else self.dec_a
        mu, sigma = style.style(target)
        return stylize_padded(self, encoder, decoder, image, mu, sigma)


def six_passes(a: Tensor, b: Tensor, enc_a: nn.Module, enc_b: nn.Module, dec_a: nn.Module, dec_b: nn.Module,
               eps: float) -> dict[str, Tensor]:
    """SemI2I's six encoder→decoder passes (the body of :meth:`SemI2IGenerator.forward`).

    A function of the four networks so the multi-city generator runs the very same passes with one
    shared encoder and decoder (``enc_a is enc_b``, ``dec_a is dec_b``).
    """
    emb_a, low_a = enc_a(a)
    emb_b, low_b = enc_b(b)
    mu_a, sigma_a = channel_stats(emb_a, eps)
    mu_b, sigma_b = channel_stats(emb_b, eps)
    # Style transfer: swap the styles of A and B.
    fake_a = dec_b(adain(emb_a, mu_b, sigma_b, eps), low_a)
    fake_b = dec_a(adain(emb_b, mu_a, sigma_a, eps), low_b)
    # Self reconstruction: each domain's own encoder and decoder.
    self_a = dec_a(emb_a, low_a)
    self_b = dec_b(emb_b, low_b)
    # Cross reconstruction: swap the styles of fake A and fake B back.
    emb_fa, low_fa = enc_b(fake_a)
    emb_fb, low_fb = enc_a(fake_b)
    mu_fa, sigma_fa = channel_stats(emb_fa, eps)
    mu_fb, sigma_fb = channel_stats(emb_fb, eps)
    cross_a = dec_a(adain(emb_fa, mu_fb, sigma_fb, eps), low_fa)
    cross_b = dec_b(adain(emb_fb, mu_fa, sigma_fa, eps), low_fb)
    return {
        "fake_a": fake_a, "fake_b": fake_b,
        "self_a": self_a, "self_b": self_b,
        "cross_a": cross_a, "cross_b": cross_b,
        "mu_a": mu_a, "sigma_a": sigma_a, "mu_b": mu_b, "sigma_b": sigma_b,
    }


@torch.no_grad()
def stylize_padded(generator: nn.Module, encoder: nn.Module, decoder: nn.Module, image: Tensor, mu: Tensor,
                   sigma: Tensor) -> Tensor:
    """``decoder(AdaIN(encoder(image), μ, σ))`` in eval mode on any H×W (padded, then cropped back):
    the test-time pass of both the two-domain and the multi-city generator."""
    was_training = generator.training
    generator.eval()
    try:
        h, w = image.shape[-2:]
        emb, low = encoder(pad_to_multiple(image))
        out = decoder(adain(emb, mu.to(emb), sigma.to(emb), generator.eps), low)
    finally:
        generator.train(was_training)
    return out[..., :h, :w]


def _check_style_path(style_path: str) -> None:
    if style_path not in STYLE_PATHS:
        raise ValueError(f"style_path must be one of {list(STYLE_PATHS)}, got {style_path!r}")


def check_input(x: Tensor, bands: int, domain: str, training: bool) -> None:
    if x.dim() != 4 or x.shape[1] != bands:
        raise ValueError(f"domain {domain}: expected (N, {bands}, H, W), got {tuple(x.shape)}")
    if training and (x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE or min(x.shape[-2:]) < MIN_SIZE):
        raise ValueError(
            f"domain {domain}: training patches need sides that are multiples of {SIZE_MULTIPLE} and "
            f">= {MIN_SIZE}, got {tuple(x.shape[-2:])} (use stylize() for arbitrary sizes)"
        )


def pad_to_multiple(x: Tensor) -> Tensor:
    """Pad bottom/right to a multiple of 4 (>= 8): reflect where the image is big enough, else replicate."""
    h, w = x.shape[-2:]
    ph = max(MIN_SIZE, -(-h // SIZE_MULTIPLE) * SIZE_MULTIPLE) - h
    pw = max(MIN_SIZE, -(-w // SIZE_MULTIPLE) * SIZE_MULTIPLE) - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
