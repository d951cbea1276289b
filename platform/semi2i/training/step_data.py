"""What a Ray Train worker trains on at each step, and who reads it: Ray Data on the cluster's spare
CPUs, or a thread in the worker.

A :class:`StepPlan` says which windows each step of one worker reads (:func:`step_windows`: a function of
seed, step, rank and world only), so any step's patches can be recomputed from its number. That is what
makes both readers exact and resumable: a worker builds its stream *after* restoring its checkpoint,
starting at the restored step, so a resumed run reads exactly what an uninterrupted one would have read
and no patch is read and thrown away. (Ray Train's ``get_dataset_shard`` hands out a stream fixed before
the workers start, restarts it from its beginning after a failure, and ``streaming_split`` assigns blocks
to workers in arrival order; a per-worker stream built at the resume point needs none of that.)

* ``ray_data``: ``ray.data.range(steps)`` → ``map_batches`` reading and normalising a few steps per task
  on the cluster's CPUs (other nodes included), in order (``preserve_order``), limited to the CPUs the Ray
  Train workers leave free. For GPU workers and any
  cluster with CPUs beside the training workers'.
* ``worker``: the same :meth:`StepPlan.read` in a prefetch thread of the worker. For a training that
  leaves no CPU free when it starts (a laptop running two CPU workers, a Tune trial filling the cluster):
  there is no other CPU to read on, and Ray Data tasks waiting for one would stall the training.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch

from semi2i.data.patches import Window, step_windows
from semi2i.data.stream import Normalize, read_patches, window_columns

DataPlane = Literal["ray_data", "worker"]

#: Steps per Ray Data read task: enough to amortise a task's overhead, few enough that a block stays
#: small in the object store (a U-net step of 32 patches of 4 x 256² float32 is 34 MB).
TASK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class StepPlan:
    """The patches one worker (``rank`` of ``world``) reads at each step, ``per_worker`` per part.

    ``parts``: one ``(windows, seed)`` per stream (two domains for the GANs, one labelled city list for
    the U-net). With ``pairs_seed`` (the multi-city model), each step reads only the two parts
    :func:`~semi2i.training.multicity_step.pair_for_step` draws, as columns ``a`` and ``b``.
    """

    parts: tuple[tuple[tuple[Window, ...], int], ...]
    rank: int
    world: int
    per_worker: int
    normalize: Normalize
    stats: dict | None = None  # BandStats.to_attrs(): overrides each store's own statistics
    labels: bool = False
    pairs_seed: int | None = None

    def picks(self, step: int) -> dict[str, tuple[int, list[Window]]]:
        """Column name -> (part index, windows) of one step."""
        if self.pairs_seed is None:
            chosen = list(enumerate(self.parts))
            names = {1: ["patch"], 2: ["a", "b"]}.get(len(chosen)) or [f"p{k}" for k in range(len(chosen))]
        else:
            from semi2i.training.multicity_step import pair_for_step

            i, j = pair_for_step(self.pairs_seed, step, len(self.parts))
            chosen, names = [(i, self.parts[i]), (j, self.parts[j])], ["a", "b"]
        return {name: (k, step_windows(windows, seed, step, self.rank, self.world, self.per_worker))
                for name, (k, (windows, seed)) in zip(names, chosen)}

    def read(self, steps: np.ndarray) -> dict[str, np.ndarray]:
        """The patches of ``steps`` as columns ``<name>`` (steps, per_worker, bands, size, size), plus
        ``<name>_label`` with ``labels``, ``<name>_part`` (which part) and ``step``/``reader_pid``."""
        rows: dict[str, list] = {}
        for step in steps:
            for name, (part, windows) in self.picks(int(step)).items():
                batch = read_patches(window_columns(windows), self.normalize, self.stats)
                rows.setdefault(name, []).append(batch["image"])
                rows.setdefault(f"{name}_part", []).append(part)
                if self.labels:
                    rows.setdefault(f"{name}_label", []).append(batch["label"])
        out = {key: np.asarray(values, dtype=np.int64) if key.endswith("_part") else np.stack(values)
               for key, values in rows.items()}
        out["step"] = np.asarray(steps, dtype=np.int64)
        out["reader_pid"] = np.full(len(steps), os.getpid(), dtype=np.int64)
        return out

    def step_bytes(self) -> int:
        """Bytes of one step's patches (to size the Ray Data read tasks)."""
        first = next(iter(w for windows, _ in self.parts for w in windows))
        from semi2i.data.store import open_store

        bands = open_store(first.store).num_bands
        return max(1, len(self.picks(0)) * self.per_worker * first.size * first.size * (bands * 4 + (8 if self.labels else 0)))


class StepReaders:
    """A worker loop's reader: the data plane its driver chose (``config["data_plane"]``, with
    ``config["data_cpus"]``), and the processes that read its patches, for the loop's summary."""

    def __init__(self, config: dict):
        self.plane: DataPlane = config.get("data_plane", "worker")
        self.data_cpus = float(config.get("data_cpus", 1))
        self.pids: set[int] = set()

    def steps(self, plan: StepPlan, start: int, end: int) -> Iterator[dict]:
        for batch in step_batches(plan, start, end, self.plane, data_cpus=self.data_cpus):
            self.pids.add(batch["reader_pid"])
            yield batch

    def summary(self) -> dict:
        return {"data_plane": self.plane, "reader_pids": sorted(self.pids), "worker_pid": os.getpid()}


def _ray_batch(batch: dict[str, np.ndarray], plan: StepPlan, start: int) -> dict[str, np.ndarray]:
    return plan.read(np.asarray(batch["id"], dtype=np.int64) + start)


def step_batches(plan: StepPlan, start: int, end: int, plane: DataPlane, *, data_cpus: float = 1,
                 prefetch: int = 4) -> Iterator[dict]:
    """Steps [start, end) of ``plan`` in order, one dict of torch tensors per step (``<name>``:
    (per_worker, bands, size, size), ``<name>_label``, ``<name>_part``, ``step``, ``reader_pid``).
    ``data_cpus``: the cluster's CPUs beside those the Ray Train workers hold (Ray Data's limit)."""
    if end <= start:
        return iter(())
    if plane == "ray_data":
        return _ray_data_steps(plan, start, end, data_cpus, prefetch)
    if plane == "worker":
        return _thread_steps(plan, start, end, prefetch)
    raise ValueError(f"data plane must be 'ray_data' or 'worker', got {plane!r}")


def _as_step(batch: dict[str, np.ndarray], k: int) -> dict:
    out = {}
    for key, value in batch.items():
        item = value[k]
        if isinstance(item, np.ndarray):  # Ray Data hands read-only views of its blocks: the step gets its own copy
            out[key] = torch.from_numpy(item if item.flags.writeable else item.copy())
        else:
            out[key] = int(item)
    return out


def _ray_data_steps(plan: StepPlan, start: int, end: int, data_cpus: float, prefetch: int) -> Iterator[dict]:
    import ray.data
    from ray.data import ExecutionResources

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no "progress bars disabled" / "execution finished" per run

    per_task = max(1, min(64, TASK_BYTES // plan.step_bytes()))
    steps = end - start
    ds = ray.data.range(steps, override_num_blocks=max(1, -(-steps // per_task)))
    ds = ds.map_batches(_ray_batch, fn_kwargs={"plan": plan, "start": start}, batch_size=per_task, batch_format="numpy")
    ctx = ds.context
    ctx.execution_options.preserve_order = True  # step order = the plan's order, on every run
    ctx.execution_options.resource_limits = ExecutionResources(cpu=max(1.0, data_cpus))
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for batch in ds.iter_batches(batch_size=per_task, batch_format="numpy", prefetch_batches=prefetch):
        for k in range(len(batch["step"])):
            yield _as_step(batch, k)


def _thread_steps(plan: StepPlan, start: int, end: int, prefetch: int) -> Iterator[dict]:
    out: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        try:
            for step in range(start, end):
                item = _as_step(plan.read(np.asarray([step])), 0)
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
