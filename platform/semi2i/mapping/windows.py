"""Chunk and window geometry for region mapping.

A raster is cut into output *chunks* of C x C pixels (the zarr chunks of the output, so each chunk
has exactly one writer). The network runs over *windows* (tiles of the model's patch size) laid on
one grid per raster, the same grid :func:`semi2i.tiling.blend_tiles` would use for the whole raster.
A chunk task evaluates every window of that global grid that touches the chunk (its halo), and
accumulates their tapered logits into the chunk only, in the same order as the whole-raster blend:
so chunked and whole-raster mapping give the same numbers, and no seam can appear at chunk borders.
Windows that straddle two chunks are evaluated by both (the price of a single writer per chunk).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from semi2i.tiling import ramp, tile_starts, window_size

if TYPE_CHECKING:
    from .cache import WindowCache


@dataclass(frozen=True)
class Chunk:
    """One output chunk of one raster: pixel box (y, x, h, w) and its chunk-grid index (row, col)."""

    raster: str
    row: int
    col: int
    y: int
    x: int
    h: int
    w: int

    @property
    def key(self) -> str:
        return f"{self.raster}/{self.row}_{self.col}"

    @property
    def pixels(self) -> int:
        return self.h * self.w

    def to_item(self) -> dict:
        return asdict(self)

    @classmethod
    def from_item(cls, item: dict) -> "Chunk":
        return cls(str(item["raster"]), *(int(item[k]) for k in ("row", "col", "y", "x", "h", "w")))


def plan_chunks(raster: str, height: int, width: int, chunk: int) -> list[Chunk]:
    """Row-major chunks of ``chunk`` pixels; the last row/column are cut at the raster edge."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    return [
        Chunk(raster, r, c, y, x, min(chunk, height - y), min(chunk, width - x))
        for r, y in enumerate(range(0, height, chunk))
        for c, x in enumerate(range(0, width, chunk))
    ]


@dataclass(frozen=True)
class WindowGrid:
    """The global window grid of one raster (what ``blend_tiles`` lays over the whole raster); ``fit``:
    windows of :func:`semi2i.tiling.fitted_window` size (the U-net), not of ``tile`` px (the stylizer)."""

    height: int
    width: int
    tile: int
    overlap: int
    fit: bool = False

    def __post_init__(self):
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile={self.tile}), got {self.overlap}")

    @property
    def th(self) -> int:
        return window_size(self.height, self.tile, self.overlap, self.fit)

    @property
    def tw(self) -> int:
        return window_size(self.width, self.tile, self.overlap, self.fit)

    def origins(self, y: int, x: int, h: int, w: int) -> list[tuple[int, int]]:
        """Window origins touching the box, in ``blend_tiles`` order (rows outer, columns inner)."""
        ys = [s for s in tile_starts(self.height, self.th, self.overlap) if s < y + h and s + self.th > y]
        xs = [s for s in tile_starts(self.width, self.tw, self.overlap) if s < x + w and s + self.tw > x]
        return [(oy, ox) for oy in ys for ox in xs]

    def support(self, y: int, x: int, h: int, w: int) -> tuple[int, int, int, int]:
        """The box of raster pixels those windows read (the chunk plus its halo)."""
        origins = self.origins(y, x, h, w)
        y0, x0 = min(o[0] for o in origins), min(o[1] for o in origins)
        y1, x1 = max(o[0] for o in origins) + self.th, max(o[1] for o in origins) + self.tw
        return y0, x0, y1 - y0, x1 - x0

    def weight(self) -> np.ndarray:
        return np.outer(ramp(self.th, self.overlap), ramp(self.tw, self.overlap)).astype(np.float32)


def blend_box(
    image: np.ndarray,
    origin: tuple[int, int],
    grid: WindowGrid,
    box: tuple[int, int, int, int],
    fn: Callable[[torch.Tensor], torch.Tensor],
    out_channels: int,
    *,
    batch_tiles: int = 8,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    device: torch.device | str = "cpu",
    cache: "WindowCache | None" = None,
    cache_key: tuple = (),
    channels_last: bool = False,
    run_batches: Callable[[Callable, list[torch.Tensor]], list[torch.Tensor]] | None = None,
    prepare_tensor: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Blended network output over ``box`` (y, x, h, w) of the raster, as the whole-raster blend gives it.

    ``image`` holds raster pixels starting at raster coordinates ``origin`` and must cover
    ``grid.support(*box)``. Returns an (out_channels, h, w) float32 tensor on ``device``: the window outputs
    never leave the device and are blended there (on an H200 that alone, with the same 2 chunk threads, took the
    paper U-net's mapping from 9.05 to 11.9 Mpx/s in bf16); the same float32 multiply-adds in the same order
    as the whole-raster blend, so on a CPU the numbers are the same. ``prepare`` must be pixel-wise (it
    runs once over ``image``, not per window). With a ``cache`` (:class:`.cache.WindowCache`), windows
    shared with other chunks are computed once; their keys are ``(*cache_key, y, x, h, w)``, so
    ``cache_key`` must name the raster and everything else that changes a window's output.
    ``channels_last`` hands the network NHWC-strided batches (no layout conversion in its first layer).
    ``run_batches(fn, batches)`` runs ``fn`` over the list of batches and returns the outputs in order
    (e.g. on several threads); by default one after the other. ``prepare_tensor`` (instead of ``prepare``):
    the raw pixels go to ``device`` as they are and are prepared and cut into windows there (for GPUs,
    where the CPU's share of the work is what limits the mapping).
    """
    by, bx, bh, bw = box
    oy, ox = origin
    th, tw = grid.th, grid.tw
    origins = grid.origins(*box)
    for ty, tx in origins:
        if ty < oy or tx < ox or ty + th > oy + image.shape[1] or tx + tw > ox + image.shape[2]:
            raise ValueError(f"window {(ty, tx, th, tw)} is outside the pixels given at {origin} {image.shape[1:]}")
    keys = [(*cache_key, ty, tx, th, tw) for ty, tx in origins]
    if cache is not None:
        ready, waiting, todo = cache.claim(keys)
    else:
        ready, waiting, todo = {}, {}, keys
    outputs: dict[tuple, torch.Tensor] = dict(ready)
    if todo:
        try:
            batches = [todo[first : first + batch_tiles] for first in range(0, len(todo), batch_tiles)]
            if prepare_tensor is not None:
                inputs = _device_batches(image, origin, batches, (th, tw), prepare_tensor, device, channels_last)
            else:
                inputs = _host_batches(image, origin, batches, (th, tw), prepare, channels_last)

            def forward(x: torch.Tensor) -> torch.Tensor:
                return fn(x.to(device)).float()

            results = run_batches(forward, inputs) if run_batches is not None else [forward(x) for x in inputs]
            for batch, out in zip(batches, results):
                for key, result in zip(batch, out):
                    result = result.contiguous()
                    outputs[key] = result
                    if cache is not None:
                        cache.put(key, result)
        except BaseException as exc:
            if cache is not None:
                cache.fail(todo, exc)  # the keys still pending: their waiters get this error
            raise
    for key, future in waiting.items():
        outputs[key] = future.result()
    weight = torch.from_numpy(grid.weight()).to(device)
    acc = torch.zeros((out_channels, bh, bw), dtype=torch.float32, device=device)
    total = torch.zeros((bh, bw), dtype=torch.float32, device=device)
    for key in keys:  # the whole-raster blend's order: rows outer, columns inner
        ty, tx = key[-4], key[-3]
        # intersection of the window with the box, in window and in box coordinates
        y0, y1 = max(ty, by), min(ty + th, by + bh)
        x0, x1 = max(tx, bx), min(tx + tw, bx + bw)
        win = (slice(y0 - ty, y1 - ty), slice(x0 - tx, x1 - tx))
        dst = (slice(y0 - by, y1 - by), slice(x0 - bx, x1 - bx))
        acc[(slice(None), *dst)] += outputs[key][(slice(None), *win)] * weight[win]
        total[dst] += weight[win]
        if cache is not None:
            cache.release(key)
    return acc / total


def _host_batches(image, origin, batches, size, prepare, channels_last):
    """The batches of window keys as CPU tensors: ``prepare`` runs once over ``image`` in numpy."""
    (oy, ox), (th, tw) = origin, size
    pixels = prepare(image) if prepare is not None else image
    pixels = pixels.astype(np.float32, copy=False)
    if channels_last:  # (H, W, C): every window slice stacks into an NHWC batch
        pixels = np.ascontiguousarray(pixels.transpose(1, 2, 0))
    inputs = []
    for batch in batches:
        if channels_last:
            tiles = np.stack([pixels[k[-4] - oy : k[-4] - oy + th, k[-3] - ox : k[-3] - ox + tw] for k in batch])
            inputs.append(torch.from_numpy(tiles).permute(0, 3, 1, 2))
        else:
            tiles = np.stack([pixels[:, k[-4] - oy : k[-4] - oy + th, k[-3] - ox : k[-3] - ox + tw] for k in batch])
            inputs.append(torch.from_numpy(tiles))
    return inputs


def _device_batches(image, origin, batches, size, prepare_tensor, device, channels_last):
    """The batches of window keys as tensors on ``device``: the raw pixels are copied once, in their own dtype,
    and prepared and cut into windows on the device."""
    (oy, ox), (th, tw) = origin, size
    raw = np.ascontiguousarray(image)
    if raw.dtype.kind == "u" and raw.dtype.itemsize > 1:  # torch's uint16/uint32 support few operations
        raw = raw.astype(np.int64 if raw.dtype.itemsize > 2 else np.int32)
    pixels = prepare_tensor(torch.from_numpy(raw).to(device))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.stack([pixels[:, k[-4] - oy : k[-4] - oy + th, k[-3] - ox : k[-3] - ox + tw] for k in batch])
            .contiguous(memory_format=layout) for batch in batches]
