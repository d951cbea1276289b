"""Network outputs of windows shared by neighbouring chunks, computed once.

A window that straddles a chunk border is needed by every chunk it touches (one writer per chunk
means each chunk blends it on its own). Without a cache each of them runs the network on it again:
with 128 px windows and 1024 px chunks that is ~25 % more forward passes, with 512 px windows over 2x.
:class:`WindowCache` keeps such a window's raw output until the last chunk that needs it has taken
it (a reference count over the chunks still to do), and lets concurrent chunk threads wait for a
window that another thread is computing instead of computing it again.

Memory stays bounded whatever the region's size: the cache holds at most ``max_bytes`` (the oldest
entries go first; a window evicted too early is simply computed again, with the same result). The values
are tensors on the model's device (GPU memory on a GPU: the outputs are blended there).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Iterable

import torch

from .windows import Chunk

Key = tuple  # (raster, tag..., y, x, h, w)

#: Default byte budget (per process): ~800 windows of 128 px x 5 classes, ~50 of 512 px.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class WindowCache:
    """Raw outputs of windows by key, reference-counted over the chunks still to do (thread-safe)."""

    def __init__(self, todo: Iterable[Chunk] = (), chunk_size: int | None = None, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self.chunk_size = chunk_size
        self._todo = {(c.raster, c.row, c.col) for c in todo}
        self._lock = threading.Lock()
        self._values: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self._left: dict[Key, int] = {}  # consumers still to come, for the keys in _values
        self._pending: dict[Key, Future] = {}
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def consumers(self, key: Key) -> int:
        """How many chunks still to do touch the window (unknown plan: 0, i.e. keep until evicted)."""
        if not self.chunk_size or not self._todo:
            return 0
        raster, (y, x, h, w) = key[0], key[-4:]
        c = self.chunk_size
        return sum((raster, r, q) in self._todo
                   for r in range(y // c, (y + h - 1) // c + 1) for q in range(x // c, (x + w - 1) // c + 1))

    def claim(self, keys: list[Key]) -> tuple[dict[Key, torch.Tensor], dict[Key, Future], list[Key]]:
        """Split ``keys`` into (ready values, futures another thread will fill, keys the caller must compute).

        The caller must :meth:`put` (or :meth:`fail`) every key it got to compute, and :meth:`release`
        every key once it has used the value."""
        ready, waiting, mine = {}, {}, []
        with self._lock:
            for key in keys:
                if key in self._values:
                    self._values.move_to_end(key)
                    ready[key] = self._values[key]
                    self.hits += 1
                elif key in self._pending:
                    waiting[key] = self._pending[key]
                    self.hits += 1
                else:
                    self._pending[key] = Future()
                    mine.append(key)
                    self.misses += 1
        return ready, waiting, mine

    def put(self, key: Key, value: torch.Tensor) -> None:
        with self._lock:
            future = self._pending.pop(key, None)
            try:
                left = self.consumers(key)
                if left != 1 and value.nbytes <= self.max_bytes:  # one consumer only: nobody else will ask
                    self._values[key] = value
                    self._left[key] = left
                    self.bytes += value.nbytes
                    while self.bytes > self.max_bytes:
                        old, dropped = self._values.popitem(last=False)
                        self._left.pop(old, None)
                        self.bytes -= dropped.nbytes
                        self.evictions += 1
            finally:  # a waiter always gets the value
                if future is not None:
                    future.set_result(value)

    def fail(self, keys: list[Key], exc: BaseException) -> None:
        with self._lock:
            futures = [self._pending.pop(k) for k in keys if k in self._pending]
        for f in futures:
            f.set_exception(exc)

    def release(self, key: Key) -> None:
        """One consumer is done with the window: drop it when it was the last one."""
        with self._lock:
            if key not in self._left or self._left[key] <= 0:
                return
            self._left[key] -= 1
            if self._left[key] == 0:
                self.bytes -= self._values.pop(key).nbytes
                del self._left[key]

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions, "bytes": self.bytes}
