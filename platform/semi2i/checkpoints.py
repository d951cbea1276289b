"""Checkpoint files: their names in a run folder, atomic writing, weights-only reading, and the
stylizing models of a checkpoint.

Training writes checkpoints (:mod:`semi2i.training`); stylizing, segmentation and mapping only read
them. Both sides import this module, so inference never imports training.

* :func:`save_checkpoint` / :func:`load_checkpoint`: every checkpoint of the package (SemI2I, U-net,
  ColorMapGAN, CycleGAN, multi-city);
* :func:`load_stylizing_models`, :func:`load_colormap`, :func:`load_translator`: the eval-mode
  networks a stylizer needs, rebuilt from the config stored in the checkpoint
  (:func:`build_generator` builds the SemI2I generator from its config).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from semi2i import io_paths, locations
from semi2i.config import ColorMapGANConfig, CycleGANConfig, SemI2IConfig
from semi2i.models.colormapgan import ColorMapGenerator
from semi2i.models.cyclegan import ResnetGenerator
from semi2i.models.semi2i import GlobalStyleStats, SemI2IGenerator

#: The checkpoint files training writes into a run folder (and into Ray Train's checkpoints).
SEMI2I_CHECKPOINT = "semi2i.pt"
COLORMAPGAN_CHECKPOINT = "colormapgan.pt"
CYCLEGAN_CHECKPOINT = "cyclegan.pt"
UNET_CHECKPOINT = "unet.pt"
MULTICITY_CHECKPOINT = "multicity.pt"

def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file, then rename (on object storage: one PUT): a crash never leaves
    a half-written checkpoint."""
    if io_paths.is_url(path):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        locations.location(path).write_bytes(buffer.getvalue())
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: a run folder's publisher never uploads it half-written
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint (a file or an object-store URL) with ``weights_only=True``: tensors and plain
    containers only, no code."""
    source = io.BytesIO(locations.location(path).read_bytes()) if io_paths.is_url(path) else Path(path)
    return torch.load(source, map_location=map_location, weights_only=True)


def build_generator(cfg: SemI2IConfig) -> SemI2IGenerator:
    """The generator ``cfg`` describes (weights from the current RNG state)."""
    return SemI2IGenerator(cfg.in_bands_a, cfg.in_bands_b, cfg.base_width, cfg.n_res_blocks, cfg.adain_eps,
                           style_path=cfg.style_path)


def load_stylizing_models(
    path: str | Path, map_location: torch.device | str = "cpu"
) -> tuple[SemI2IGenerator, GlobalStyleStats, SemI2IConfig]:
    """The generator (eval mode) and global statistics of a checkpoint, for test-time stylizing: the
    weight EMA and its statistics when the checkpoint has them, else the last iterate."""
    state = load_checkpoint(path, map_location)
    cfg = SemI2IConfig(**state["config"])
    generator = build_generator(cfg)
    ema = "generator_ema" in state
    generator.load_state_dict(state["generator_ema" if ema else "generator"])
    style = GlobalStyleStats(generator.style_channels, cfg.d_rate)
    style.load_state_dict(state["style_ema" if ema else "style"])
    return generator.to(map_location).eval(), style.to(map_location), cfg


def load_colormap(path: str | Path, map_location: torch.device | str = "cpu") -> tuple[ColorMapGenerator, ColorMapGANConfig]:
    """The trained colour map of a checkpoint (eval mode) and its config, for stylizing."""
    state = load_checkpoint(path, map_location)
    if "generator" not in state or "weight" not in state["generator"]:
        raise ValueError(f"{path}: not a ColorMapGAN checkpoint")
    cfg = ColorMapGANConfig(**state["config"])
    generator = ColorMapGenerator(cfg.in_bands_a, cfg.bins)
    generator.load_state_dict(state["generator"])
    return generator.to(map_location).eval(), cfg


def load_translator(path: str | Path, map_location: torch.device | str = "cpu") -> tuple[ResnetGenerator, ResnetGenerator, CycleGANConfig]:
    """Both trained generators (eval mode, G_AB then G_BA) and the config of a checkpoint."""
    state = load_checkpoint(path, map_location)
    if "gen_ab" not in state:
        raise ValueError(f"{path}: not a CycleGAN checkpoint")
    cfg = CycleGANConfig(**state["config"])
    gen_ab = ResnetGenerator(cfg.in_bands_a, cfg.in_bands_b, cfg.base_width, cfg.n_res_blocks)
    gen_ba = ResnetGenerator(cfg.in_bands_b, cfg.in_bands_a, cfg.base_width, cfg.n_res_blocks)
    gen_ab.load_state_dict(state["gen_ab"])
    gen_ba.load_state_dict(state["gen_ba"])
    return gen_ab.to(map_location).eval(), gen_ba.to(map_location).eval(), cfg
