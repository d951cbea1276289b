"""Whole rasters through fully convolutional networks in overlapping tiles, blended without seams.

Stylizing runs the generator over tiles of its training patch size (instance norm and AdaIN use the
statistics of what they see, so tiles must look like training patches); segmenting runs the U-net (batch
norms folded: every pixel's logits depend on its neighbourhood only) over larger windows
(:func:`default_window`). Both blend the overlaps with weights that ramp up from the tile border, so no
seam survives.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

#: On a CPU, the pixels per forward pass beyond which a U-net's activations leave the caches and every
#: pixel costs more (quick U-net, width 16, 2 threads of one torch thread each, 2 cores: 0.86 Mpx/s with one
#: 256 px window per pass, 0.80 with 4 x 128 px, 0.75 with 8 x 128 px, 0.64 with one 512 px window).
CPU_FORWARD_PIXELS = 256 * 256
#: Windows per forward pass on a GPU, which wants large batches.
GPU_BATCH_WINDOWS = 8


def default_window(patch_size: int) -> int:
    """The window edge for mapping with a network trained on ``patch_size`` patches: twice the patch. An
    overlap of ``o`` px costs ``(t / (t - o))**2`` times the pixels with windows of ``t`` px (16 px of
    overlap: 1.31x at 128 px, 1.14x at 256 px) and the network is convolutional, so larger windows give the
    same logits away from window borders; twice the patch keeps windows at the training scale."""
    return 2 * int(patch_size)


def default_batch_windows(window: int, device: torch.device | str | None = None) -> int:
    """Windows per forward pass: as many as fit :data:`CPU_FORWARD_PIXELS` on a CPU (at least one),
    :data:`GPU_BATCH_WINDOWS` on a GPU."""
    if device is not None and torch.device(device).type != "cpu":
        return GPU_BATCH_WINDOWS
    return max(1, CPU_FORWARD_PIXELS // (int(window) * int(window)))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Fewest tile origins covering [0, length) with >= ``overlap`` shared pixels, spread evenly."""
    if length <= tile:
        return [0]
    count = -(-(length - tile) // (tile - overlap)) + 1
    return [int(s) for s in np.round(np.linspace(0, length - tile, count))]


#: Fitted windows are rounded up to a multiple of this: the 2**depth of the quick and paper U-nets, which
#: then pad nothing inside.
FIT_MULTIPLE = 16


def fitted_window(length: int, window: int, overlap: int) -> int:
    """The window edge along a side of ``length`` px: as many windows as ``window`` px ones need, each as
    small as still covers the side with ``overlap`` (rounded up to :data:`FIT_MULTIPLE`, at most
    ``window``). Windows of exactly ``window`` px overshoot by up to a window: a 838 px side takes 4 windows
    of 256 px (1024 px computed, 1.22x) or 4 of 224 px (896 px, 1.07x)."""
    if length <= window:
        return length
    count = len(tile_starts(length, window, overlap))
    need = -(-(length + (count - 1) * overlap) // count)
    return min(window, -(-need // FIT_MULTIPLE) * FIT_MULTIPLE)


def window_size(length: int, tile: int, overlap: int, fit: bool) -> int:
    """The window edge along a side: :func:`fitted_window` with ``fit``, else ``tile`` (the side if shorter)."""
    return fitted_window(length, tile, overlap) if fit else min(tile, length)


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
    fit: bool = False,
) -> np.ndarray:
    """(C, H, W) -> (out_channels, H, W) float32: ``fn`` on (N, C, t, t) tiles, weighted average in overlaps.

    ``prepare`` normalises each raw tile before it becomes a tensor (so only tiles, never the whole
    raster, exist as float copies). ``fit``: tiles of :func:`fitted_window` size (networks that take any
    size: the U-net), not of ``tile`` px.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    _, height, width = image.shape
    th, tw = window_size(height, tile, overlap, fit), window_size(width, tile, overlap, fit)
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
