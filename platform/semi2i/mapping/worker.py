"""Compute and write one output chunk: read the chunk's halo from zarr, (stylize,) segment, blend, argmax, write.

The same :class:`ChunkMapper` serves the in-process path (:mod:`.local`: chunk threads) and the Ray
tasks of a job on a cluster (each runs :mod:`.local` on its piece of chunks), so both produce the same
outputs. Windows shared with neighbouring chunks go through a :class:`.cache.WindowCache`.

Inference options (job keys, all optional): ``window`` (window edge, default
:func:`semi2i.tiling.default_window`, twice the model's patch size: the U-net is convolutional with
folded batch norms, so larger windows are valid and waste less of each pass on overlaps; their logits
differ slightly at window borders), ``batch_tiles`` (windows per forward pass, default
:func:`semi2i.tiling.default_batch_windows`: what fits a CPU's caches, 8 on a GPU),
``precision`` (``"fp32"``, ``"bf16"``: bf16 autocast, or ``"auto"``: bf16 where this device has bf16 units),
``channels_last`` (NHWC weights and batches; default on, 1.27x on this CPU), ``tf32`` (TF32 matmuls
and convolutions on CUDA).
"""

from __future__ import annotations

import json
from concurrent.futures import Executor

import numpy as np
import torch
import zarr

from semi2i import locations
from semi2i.models.precision import autocast
from semi2i.segment import SegmentationModel
from semi2i.tiling import default_batch_windows, default_window

from .cache import WindowCache
from .rasters import open_input
from .windows import Chunk, WindowGrid, blend_box

NODATA_CLASS = 255


class ChunkMapper:
    """Holds the loaded model(s) and output arrays of one job; :meth:`run` maps one chunk."""

    def __init__(self, job: dict, cache: WindowCache | None = None, pool: Executor | None = None):
        self.job = job
        self.pool = pool  # runs a chunk's forward batches in parallel (see .local)
        self.device = torch.device(job.get("device") or "cpu")
        self.model = SegmentationModel(job["checkpoint"], self.device)
        self.store = open_input(job["input"])  # a city store, or the input rasters themselves (.rasters)
        if self.store.num_bands != (job["stylize"]["in_bands"] if job.get("stylize") else self.model.in_bands):
            raise ValueError(f"{job['input']}: {self.store.num_bands} bands, the model expects {self.model.in_bands}")
        self.overlap = int(job["overlap"])
        self.window = int(job.get("window") or default_window(self.model.patch_size))
        self.batch_tiles = int(job.get("batch_tiles") or default_batch_windows(self.window, self.device))
        self.precision = job.get("precision") or "fp32"
        self.channels_last = job.get("channels_last") is not False
        if not self.channels_last:
            self.model.model.to(memory_format=torch.contiguous_format)
        if job.get("tf32") and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.cache = cache if cache is not None else WindowCache(max_bytes=int(job.get("cache_bytes") or 0) or
                                                                 WindowCache().max_bytes)
        self.out = zarr.open_group(locations.location(job["zarr"]).zarr_store(), mode="r+")
        self.done_dir = locations.location(job["done_dir"])  # a folder, or a prefix on object storage
        self.stylizer = _load_stylizer(job["stylize"], self.device, self.precision) if job.get("stylize") else None
        # on a GPU the raw pixels are normalised and cut into windows there (the CPU is what limits)
        self._zscore_on_device = self.model.stats.zscore_tensor if self.device.type != "cpu" else None

    def _run_batches(self, fn, batches: list) -> list:
        if self.pool is None or len(batches) < 2:
            return [fn(x) for x in batches]
        return list(self.pool.map(_inference(fn), batches))

    def _segment(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model.model(x)

    # -- compute -------------------------------------------------------------------------------
    def compute(self, chunk: Chunk) -> dict:
        """The chunk's class map (uint8, ``NODATA_CLASS`` on nodata), logits (a tensor on the model's device)
        and, with --stylize, the stylized pixels."""
        info = self.store.raster(chunk.raster)
        box = (chunk.y, chunk.x, chunk.h, chunk.w)
        seg_grid = WindowGrid(info.height, info.width, self.window, self.overlap, fit=True)
        sy, sx, sh, sw = seg_grid.support(*box)
        result: dict[str, np.ndarray] = {}
        if self.stylizer is None:
            pixels, _ = self.store.read_window(chunk.raster, sy, sx, sh, sw)
            origin = (sy, sx)
        else:
            sty = self.stylizer
            sty_grid = WindowGrid(info.height, info.width, sty.tile_size, sty.overlap)
            # the stylizer's windows over the segmentation windows' support, read once
            ry, rx, rh, rw = _union(sty_grid.support(sy, sx, sh, sw), (sy, sx, sh, sw))
            raw, _ = self.store.read_window(chunk.raster, ry, rx, rh, rw)
            fake = blend_box(raw, (ry, rx), sty_grid, (sy, sx, sh, sw),
                             sty.generate, sty.out_bands,
                             batch_tiles=sty.batch_tiles, prepare=sty.source_stats.to_unit_range, device=self.device,
                             cache=self.cache, cache_key=(chunk.raster, "stylize"))
            pixels = sty.target_stats.from_unit_range(fake.cpu().numpy())
            # the stylized imagery of this chunk, cast like stylize_city does
            cy, cx = chunk.y - sy, chunk.x - sx
            result["stylized"] = _cast(pixels[:, cy : cy + chunk.h, cx : cx + chunk.w], np.dtype(self.job["stylize"]["dtype"]))
            origin = (sy, sx)
            raw_chunk = raw[:, chunk.y - ry : chunk.y - ry + chunk.h, chunk.x - rx : chunk.x - rx + chunk.w]
        with torch.inference_mode():
            logits = blend_box(pixels, origin, seg_grid, box, self._segment, self.model.num_classes,
                               batch_tiles=self.batch_tiles, prepare=self.model.stats.zscore, device=self.device,
                               cache=self.cache, cache_key=(chunk.raster, "segment"), channels_last=self.channels_last,
                               run_batches=self._run_batches, prepare_tensor=self._zscore_on_device)
        if self.stylizer is None:
            raw_chunk = pixels[:, chunk.y - sy : chunk.y - sy + chunk.h, chunk.x - sx : chunk.x - sx + chunk.w]
        valid = self.store.valid_mask(raw_chunk)
        # only the classes leave the device; max(0).indices is argmax (first maximum), 6x faster on a CPU
        classes = logits.max(dim=0).indices.to(torch.uint8).cpu().numpy()
        classes[~valid] = NODATA_CLASS
        result["classes"], result["logits"], result["valid"] = classes, logits, valid
        if "stylized" in result and self.store.nodata is not None:
            result["stylized"][:, ~valid] = np.asarray(self.store.nodata).astype(result["stylized"].dtype)
        return result

    # -- write ---------------------------------------------------------------------------------
    def run(self, chunk: Chunk) -> int:
        """Compute, write exactly this chunk, then record it as finished. Returns its pixel count."""
        if self.is_done(chunk):
            return 0
        self.write(chunk)
        self.mark_done(chunk)
        return chunk.pixels

    def write(self, chunk: Chunk) -> None:
        """Compute and write this chunk's outputs (not yet recorded as finished: see :meth:`mark_done`)."""
        result = self.compute(chunk)
        ys, xs = slice(chunk.y, chunk.y + chunk.h), slice(chunk.x, chunk.x + chunk.w)
        group = self.out[chunk.raster]
        group["classes"][ys, xs] = result["classes"]
        if self.job.get("probabilities"):
            probs = _softmax_u8(result["logits"].cpu().numpy())
            probs[:, ~result["valid"]] = 0
            group["probabilities"][:, ys, xs] = probs
        if "stylized" in result:
            group["stylized"][:, ys, xs] = result["stylized"]

    def marker(self, chunk: Chunk) -> locations.Location:
        return self.done_dir / chunk.raster / f"{chunk.row}_{chunk.col}.done"

    def is_done(self, chunk: Chunk) -> bool:
        return self.marker(chunk).exists()

    def mark_done(self, chunk: Chunk) -> None:
        """The marker is written after the data (atomically: renamed, or one PUT), so a marked chunk is
        always complete."""
        self.marker(chunk).write_text(json.dumps({"y": chunk.y, "x": chunk.x, "h": chunk.h, "w": chunk.w}))


def _inference(fn):
    """``fn`` under inference mode (a mode is per thread: pool threads need their own)."""
    def run(x):
        with torch.inference_mode():
            return fn(x)
    return run


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    y0, x0 = min(a[0], b[0]), min(a[1], b[1])
    y1, x1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return y0, x0, y1 - y0, x1 - x0


def _softmax_u8(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=0, keepdims=True))
    return np.round(255.0 * z / z.sum(axis=0, keepdims=True)).astype(np.uint8)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _load_stylizer(spec: dict, device: torch.device, precision: str):
    from semi2i.data.normalize import BandStats
    from semi2i.stylizers.semi2i import SemI2IStylizer

    return SemI2IStylizer.from_checkpoint(spec["checkpoint"], BandStats.from_attrs(spec["source_stats"]),
                                          BandStats.from_attrs(spec["target_stats"]), source=spec["source"],
                                          overlap=int(spec.get("overlap", 32)), device=device, precision=precision)
