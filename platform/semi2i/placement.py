"""Where pixel work runs: as Ray tasks placed by resources when a job runs on a Ray cluster, in this
process otherwise, and a record of where each piece ran.

A job's driver (``jobs/adapt.py``, ``jobs/map_region.py``: on the head node of a cluster, which may have
no CPUs for tasks at all) only plans and commits. Every stage that touches pixels cuts its work into
pieces (a raster, a run of map chunks) and hands them to :func:`run_each`. Inside :func:`on_cluster` (the
adapt and multi-city runs and a mapping job with Ray enter it), while Ray is up, each piece is a Ray task
that asks for what it needs (a CPU; a GPU with ``--gpu``), so it runs on a worker node; anywhere else (library calls,
unit tests) the pieces run here, one after another (or on a few threads where a stage asks), with the same code.

Each piece reports the node and process it ran on (:func:`here`). A :func:`recording` collects the
reports by stage: the adapt run keeps them in ``placement.json`` and a mapping job in its ``job.json``,
so anyone can check that the driver did none of the pixel work.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import os
import socket
import sys
import time
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

_CLUSTER: contextvars.ContextVar[bool] = contextvars.ContextVar("semi2i_cluster", default=False)
_ON_DRIVER_NODE: contextvars.ContextVar[bool] = contextvars.ContextVar("semi2i_on_driver_node", default=False)
#: The label every Ray node carries with its node id (what Ray Data itself selects to pin reads of local paths).
NODE_ID_LABEL = "ray.io/node-id"
_RECORDINGS: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar("semi2i_recordings", default=())
#: seconds between progress lines of a stage's pieces
PROGRESS_EVERY_S = 10.0


def ray_up() -> bool:
    """Whether this process is connected to a Ray cluster (without importing Ray when it was never used)."""
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def on_cluster_now() -> bool:
    """Whether :func:`run_each` places pieces on the cluster here."""
    return _CLUSTER.get() and ray_up()


@contextlib.contextmanager
def on_cluster(enabled: bool = True) -> Iterator[None]:
    """Run the pieces of the stages inside as Ray tasks when ``enabled``, whenever Ray is up at the time a
    stage runs (a mapping job starts Ray only once its input has passed the header checks)."""
    token = _CLUSTER.set(bool(enabled))
    try:
        yield
    finally:
        _CLUSTER.reset(token)


@contextlib.contextmanager
def on_driver_node(enabled: bool = True) -> Iterator[None]:
    """Keep the pieces and Ray Train workers started inside on the node of the process that starts them
    (the driver's), when ``enabled``: a run folder on object storage is worked on in the driver's local
    copy (:mod:`semi2i.remote_run`), which other nodes cannot see, so its pixel work must not land on an
    autoscaled worker node."""
    token = _ON_DRIVER_NODE.set(bool(enabled))
    try:
        yield
    finally:
        _ON_DRIVER_NODE.reset(token)


def node_selector() -> dict[str, str] | None:
    """The Ray ``label_selector`` that keeps work on this process's node inside :func:`on_driver_node`
    while Ray is up; ``None`` otherwise (work goes wherever its resources are), and also when every node
    of the cluster runs on this machine (``ray.cluster_utils``, a laptop): they all see its local disk."""
    pinned = _pinned_node()
    return {NODE_ID_LABEL: pinned["NodeID"]} if pinned else None


def _pinned_node() -> dict | None:
    """This process's ``ray.nodes()`` entry when work must stay on it (see :func:`node_selector`), else None."""
    if not _ON_DRIVER_NODE.get() or not ray_up():
        return None
    ray = sys.modules["ray"]
    me = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    mine = next((n for n in nodes if n["NodeID"] == me), None)
    if mine is None or all(n["NodeManagerAddress"] == mine["NodeManagerAddress"] for n in nodes):
        return None
    return mine


def nodes_in_reach() -> list[dict]:
    """The alive Ray nodes (``ray.nodes()`` entries) work started here may run on: this node alone inside
    :func:`on_driver_node`, every node otherwise."""
    pinned = _pinned_node()
    return [pinned] if pinned else [n for n in sys.modules["ray"].nodes() if n.get("Alive")]


def check_driver_node(what: str, cpus: float = 0, gpus: float = 0) -> None:
    """Inside :func:`on_driver_node`, refuse work that this node cannot run (a head node started with no
    CPUs or no GPU) in one line, instead of leaving it waiting forever for resources that never come."""
    pinned = _pinned_node()
    if pinned is None:
        return
    have = pinned["Resources"]
    if have.get("CPU", 0) < cpus or have.get("GPU", 0) < gpus:
        raise RuntimeError(f"{what}: a run folder on object storage keeps its work on the driver's node, which has "
                           f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs, but it needs {cpus:g} and "
                           f"{gpus:g}: run the driver on a node that has them, or use a run folder on a shared volume")


def here() -> dict:
    """The node (Ray's node id when Ray is up), host and process this code runs in."""
    node = None
    if ray_up():
        node = sys.modules["ray"].get_runtime_context().get_node_id()
    return {"node": node, "host": socket.gethostname(), "pid": os.getpid()}


@contextlib.contextmanager
def recording() -> Iterator[dict[str, list[dict]]]:
    """Collect where the pieces of every stage run inside: ``{stage: [here(), ...]}`` (one entry per
    process and node, however many pieces it ran)."""
    record: dict[str, list[dict]] = {}
    token = _RECORDINGS.set((*_RECORDINGS.get(), record))
    try:
        yield record
    finally:
        _RECORDINGS.reset(token)


def current() -> dict[str, list[dict]]:
    """The innermost active :func:`recording` (a new empty one when none is active)."""
    recordings = _RECORDINGS.get()
    return recordings[-1] if recordings else {}


def record(stage: str, places: Iterable[dict]) -> None:
    """Add ``places`` to every active :func:`recording` under ``stage`` (each place once)."""
    places = list(places)
    for rec in _RECORDINGS.get():
        seen = rec.setdefault(stage, [])
        seen.extend(p for p in places if p not in seen)


def run_stages(steps: Iterable[tuple[str, Callable[[], None]]], *, timings: dict[str, float] | None = None,
               after: Callable[[dict[str, list[dict]]], None] | None = None, cluster: bool = True,
               driver_node: bool = False) -> dict[str, float]:
    """Run each ``(stage, step)`` in order: the one stage runner of the adapt and multi-city runs and of a
    Tune trial's rung. With ``cluster``, the stages' pieces go to Ray tasks while Ray is up
    (:func:`on_cluster`), on this node with ``driver_node`` (:func:`on_driver_node`); ``after(where)`` runs
    after each stage with the placement recorded so far (publishing, ``placement.json``); each stage's
    seconds (``after`` included) go into ``timings``."""
    timings = {} if timings is None else timings
    with on_cluster(cluster), on_driver_node(driver_node), recording() as where:
        for stage, step in steps:
            started = time.perf_counter()
            step()
            if after is not None:
                after(where)
            timings[stage] = time.perf_counter() - started
            log.info("stage %s: %.1f s", stage, timings[stage])
    return timings


def node_cpus() -> int:
    """The CPUs of the cluster's largest node (this machine's cores without Ray): what one process on a
    worker node may use. Thread counts come from here, not from the driver's machine, which may be a small
    head node with no CPUs for tasks at all."""
    if ray_up():
        nodes = [n["Resources"].get("CPU", 0) for n in sys.modules["ray"].nodes() if n.get("Alive")]
        if any(nodes):
            return max(1, int(max(nodes)))
    return max(1, os.cpu_count() or 1)


def task_threads() -> int:
    """CPU threads for this piece: the CPUs Ray assigned to its task or actor, else this machine's cores."""
    if ray_up():
        try:
            cpus = sys.modules["ray"].get_runtime_context().get_assigned_resources().get("CPU")
        except Exception:  # noqa: BLE001 - the driver has no assigned resources
            cpus = None
        if cpus:
            return max(1, int(cpus))
    return max(1, os.cpu_count() or 1)


def run_each(fn: Callable[[Any], Any], items: Iterable[Any], *, stage: str, num_cpus: float = 1, num_gpus: float = 0,
             local_threads: int = 1) -> list:
    """``[fn(item) for item in items]``, as Ray tasks of ``num_cpus``/``num_gpus`` each under
    :func:`on_cluster`, else here. ``fn`` and the items must be picklable (module-level functions,
    ``functools.partial``) and carry absolute paths: tasks run in other working directories. A failed
    piece cancels the others and its own exception is raised here. ``local_threads`` > 1 runs the pieces
    here on that many threads (for pieces that spend their time in code that releases the GIL: GDAL reads,
    codecs, zarr I/O), as a cluster runs them side by side; the results keep the items' order."""
    items = list(items)
    if not items:
        return []
    if not on_cluster_now():
        results = _run_here(fn, items, local_threads)
        record(stage, [here()])
        return results
    import ray

    selector = node_selector()
    check_driver_node(f"stage {stage}", num_cpus, num_gpus)
    remote = ray.remote(_placed).options(num_cpus=num_cpus, num_gpus=num_gpus, name=f"semi2i.{stage}", max_retries=0,
                                         **({"label_selector": selector} if selector else {}))
    shared = ray.put(fn)  # one copy in the object store, however many pieces
    refs = [remote.remote(shared, item) for item in items]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    places, pending = [], list(refs)
    started = last = time.perf_counter()
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=PROGRESS_EVERY_S)
        for ref in done:
            try:
                results[index[ref]], place = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                _cancel(pending)
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None
            places.append(place)
        if pending and time.perf_counter() - last >= PROGRESS_EVERY_S:
            last = time.perf_counter()
            log.info("%s: %d/%d pieces done in %.0f s", stage, len(refs) - len(pending), len(refs), last - started)
    record(stage, places)
    return results


def _run_here(fn: Callable[[Any], Any], items: list, threads: int) -> list:
    """The pieces in this process, on ``threads`` threads at most. A failure cancels the pieces not started;
    the first failed piece's exception (in the items' order) is raised once the running ones are done, so the
    caller's clean-up never races with a piece still writing."""
    threads = min(max(1, int(threads)), len(items))
    if threads == 1:
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="semi2i-piece") as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            for f in futures:
                f.cancel()
            concurrent.futures.wait(futures)
            raise failed[0].exception()
        return [f.result() for f in futures]


def run_one(fn: Callable[[], Any], *, stage: str, num_cpus: float = 1, num_gpus: float = 0) -> Any:
    """``fn()`` as one piece of :func:`run_each`."""
    return run_each(functools.partial(_call, fn), [None], stage=stage, num_cpus=num_cpus, num_gpus=num_gpus)[0]


def _call(fn: Callable[[], Any], _: None) -> Any:
    return fn()


def _placed(fn: Callable[[Any], Any], item: Any) -> tuple[Any, dict]:
    """A piece in a Ray worker: torch gets the task's CPUs as threads (workers are reused across tasks)."""
    import torch

    torch.set_num_threads(task_threads())
    return fn(item), here()


def _cancel(refs: list) -> None:
    """Stop the other pieces of a failed stage and wait (briefly) until they are gone, so that the caller's
    clean-up does not race with their writes."""
    import ray

    for ref in refs:
        ray.cancel(ref)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=30)
