"""Whole rasters through fully convolutional networks in overlapping tiles, blended without seams.

Stylizing and segmenting both run a network over tiles of the training patch size (instance norm and
AdaIN use the statistics of what they see, so tiles must look like training patches) and blend the
overlaps with weights that ramp up from the tile border, so no seam survives.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Fewest tile origins covering [0, length) with >= ``overlap`` shared pixels, spread evenly."""
    if length <= tile:
        return [0]
    count = -(-(length - tile) // (tile - overlap)) + 1
    return [int(s) for s in np.round(np.linspace(0, length - tile, count))]


def ramp(n: int, overlap: int) -> np.ndarray:
    """Blend weights along one tile side: rising over ``overlap`` pixels at each end, 1 inside, never 0."""
    if overlap <= 0:
        return np.ones(n)
    edge = np.minimum(np.arange(1, n + 1), np.arange(n, 0, -1))
    return np.minimum(edge, overlap + 1) / (overlap + 1)


def blend_tiles(
    image: np.ndarray,
    fn: Callable[[torch.Tensor], torch.Tensor],
    out_channels: int,
    *,
    tile: int,
    overlap: int,
    batch_tiles: int = 4,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(C, H, W) -> (out_channels, H, W) float32: ``fn`` on (N, C, t, t) tiles, weighted average in overlaps.

    ``prepare`` normalises each raw tile before it becomes a tensor (so only tiles, never the whole
    raster, exist as float copies).
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    _, height, width = image.shape
    th, tw = min(tile, height), min(tile, width)
    origins = [(y, x) for y in tile_starts(height, th, overlap) for x in tile_starts(width, tw, overlap)]
    weight = np.outer(ramp(th, overlap), ramp(tw, overlap)).astype(np.float32)
    acc = np.zeros((out_channels, height, width), dtype=np.float32)
    total = np.zeros((height, width), dtype=np.float32)
    for first in range(0, len(origins), batch_tiles):
        batch = origins[first : first + batch_tiles]
        tiles = [image[:, y : y + th, x : x + tw] for y, x in batch]
        if prepare is not None:
            tiles = [prepare(t) for t in tiles]
        out = fn(torch.from_numpy(np.stack(tiles).astype(np.float32)).to(device)).float().cpu().numpy()
        for (y, x), result in zip(batch, out):
            acc[:, y : y + th, x : x + tw] += result * weight
            total[y : y + th, x : x + tw] += weight
    return acc / total
