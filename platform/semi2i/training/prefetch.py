"""Per-worker training data: this worker's equal, seeded share of patches for each step, read straight
from the city stores (:func:`semi2i.data.patches.step_windows`, the same reader as the Ray Data stream)
by a background thread.

Any step's patches follow from the step number alone, so a resumed run replays exactly what an
uninterrupted one would have seen, and no worker ever waits in a collective that another worker skips
(equal shares, same step count).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch

from semi2i.data.normalize import BandStats
from semi2i.data.patches import Window, step_windows
from semi2i.data.stream import Normalize, read_patches, window_columns


def patch_batches(
    windows: list[Window],
    *,
    seed: int,
    start_step: int,
    end_step: int,
    rank: int,
    world: int,
    per_worker: int,
    normalize: Normalize,
    stats: BandStats | None = None,
    prefetch: int = 4,
) -> Iterator[dict[str, torch.Tensor]]:
    """This worker's batches for steps [start_step, end_step), read by a background thread."""
    stats_attrs = stats.to_attrs() if stats is not None else None
    out: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        try:
            for step in range(start_step, end_step):
                picked = step_windows(windows, seed, step, rank, world, per_worker)
                batch = read_patches(window_columns(picked), normalize, stats_attrs)
                item = {"image": torch.from_numpy(batch["image"]), "label": torch.from_numpy(batch["label"])}
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(None)
        except BaseException as exc:  # surface reader errors in the training thread
            out.put(exc)

    thread = threading.Thread(target=produce, name="patch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
