"""Patch grids over rasters: which windows a city is cut into.

The paper cuts cities into 256x256 patches with an overlap of 32 (stride 224). The last row and column
of the grid are aligned to the raster's border, so every pixel is covered and no patch is padded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .store import CityStore


@dataclass(frozen=True, order=True)
class Window:
    """A square patch of one raster of one city store; cheap to ship as a Ray Data row."""

    store: str
    raster: str
    y: int
    x: int
    size: int

    def to_row(self) -> dict:
        return asdict(self)


def grid_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride ``size - overlap``, last start flush with the border."""
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, {size}), got {overlap}")
    if length < size:
        raise ValueError(f"an axis of {length} px is shorter than one {size} px patch")
    stride = size - overlap
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def patch_grid(height: int, width: int, size: int = 256, overlap: int = 32) -> list[tuple[int, int]]:
    """(y, x) of every patch of a height x width raster, row-major."""
    return [(y, x) for y in grid_starts(height, size, overlap) for x in grid_starts(width, size, overlap)]


def city_windows(store: CityStore, size: int = 256, overlap: int = 32, max_ignored: float | None = None) -> list[Window]:
    """All windows of a city (rasters in store order). With ``max_ignored``, windows whose fraction of
    nodata/ignore pixels exceeds it are skipped (this reads each window's label or validity)."""
    windows = [
        Window(str(store.path), r.id, y, x, size) for r in store.rasters for y, x in patch_grid(r.height, r.width, size, overlap)
    ]
    if max_ignored is None:
        return windows
    return [w for w in windows if ignored_fraction(store, w) <= max_ignored]


def ignored_fraction(store: CityStore, window: Window) -> float:
    image, label = store.read_window(window.raster, window.y, window.x, window.size, window.size)
    unusable = ~store.valid_mask(image)
    if label is not None:
        unusable |= label == store.ignore_index
    return float(unusable.mean())


def shuffled(windows: list[Window], seed: int, epoch: int = 0) -> list[Window]:
    """A seeded permutation (a new one per epoch), identical on every machine and worker."""
    order = np.random.default_rng([seed, epoch]).permutation(len(windows))
    return [windows[i] for i in order]


def equal_shards(windows: list[Window], num_shards: int) -> list[Window]:
    """Drop the remainder so that ``num_shards`` workers get exactly equal shares (uneven shares would
    leave one worker waiting in a collective that the others never join)."""
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    usable = len(windows) - len(windows) % num_shards
    if usable == 0:
        raise ValueError(f"{len(windows)} windows cannot be shared by {num_shards} workers")
    return windows[:usable]


def step_windows(windows: Sequence[Window], seed: int, step: int, rank: int = 0, world: int = 1, per_worker: int = 1) -> list[Window]:
    """The windows worker ``rank`` of ``world`` trains on at global ``step``.

    The windows form an endless stream of seeded permutations (epoch e = ``shuffled(windows, seed, e)``);
    step s consumes items [s·G, (s+1)·G) of it, G = world · per_worker, and each rank takes its own
    slice. Every worker gets an equal share, any step can be recomputed from its number alone (so a
    resumed run replays exactly the patches an uninterrupted one would see), and a single process
    with ``per_worker = world · p`` sees the union of what ``world`` workers see with ``p`` each.
    """
    n = len(windows)
    if n == 0:
        raise ValueError("no windows to train on")
    global_batch = world * per_worker
    first = step * global_batch + rank * per_worker
    picked, cache = [], {}
    for k in range(first, first + per_worker):
        epoch, pos = divmod(k, n)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        picked.append(windows[cache[epoch][pos]])
    return picked
