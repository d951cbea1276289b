"""Independent Ray Train runs side by side: the source U-net, the GAN baselines and SemI2I (each of its seeds)
do not depend on one another, so an adapt run trains them at once where the cluster has room for them.

Room means: every run keeps what it would have alone (``workers`` workers, each with its torch threads or its
GPU), and CPU runs leave one CPU for Ray Data to read their patches on. On a cluster of several nodes the runs
then land on different nodes and the stage takes as long as its longest run. On one machine they run one after another: splitting its cores between runs would slow the
longest run (SemI2I, ~2/3 of the training time in the quick profile) by 1.8x while the short ones finish
early and leave their cores idle (measured scaling 1 -> 2 threads: 1.75-1.85x, ../shared/perf-notes.md).
The longest runs start first (the order of ``jobs``), so the short ones fill in behind them. What does split
one machine's cores is :mod:`semi2i.lanes`: there the short trainings' later stages (stylizing, fine-tuning,
mapping) fill the cores beside SemI2I's training, so no core waits idle.
"""

from __future__ import annotations

import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from semi2i.training.distributed import Scaling

log = logging.getLogger(__name__)

#: one training: its name (a stage or a SemI2I seed) and what trains it with a given scaling
Training = tuple[str, Callable[[Scaling], None]]


def concurrent_trainings(cpus: float, workers: int, threads: int, gpu: bool, gpus: float, wanted: int) -> int:
    """How many trainings fit on the cluster at once, each with ``workers`` GPUs, or ``workers`` × ``threads`` CPUs."""
    room = int(gpus // workers) if gpu else int(cpus // (workers * max(1, threads)))
    return max(1, min(wanted, room))


def run_trainings(jobs: list[Training], scaling: Scaling, share: float = 1.0) -> dict[str, float]:
    """Run ``jobs`` (longest first) as many at a time as fit in ``share`` of the cluster (the rest is another
    lane's, :mod:`semi2i.lanes`); returns each one's wall seconds.

    Every job runs to its end even when another fails (a Ray Train run cannot be stopped half-way
    cleanly); the first failure is raised afterwards, and a re-run resumes the failed ones only.
    """
    if not jobs:
        return {}
    import ray

    if not ray.is_initialized():
        ray.init()
    res = ray.cluster_resources()
    # CPU trainings that may read through Ray Data leave it one CPU: packing them to the last CPU would leave
    # their read tasks nowhere to run (semi2i.training.step_data)
    reserve = 1 if not scaling.use_gpu and scaling.data != "worker" else 0
    at_once = concurrent_trainings((res.get("CPU", 0) - reserve) * share, scaling.num_workers, scaling.threads(),
                                   scaling.use_gpu, res.get("GPU", 0) * share, len(jobs))
    log.info("training %s: %d at a time", ", ".join(name for name, _ in jobs), at_once)
    seconds: dict[str, float] = {}

    def timed(name: str, fit: Callable[[Scaling], None]) -> None:
        started = time.perf_counter()
        fit(scaling)
        seconds[name] = time.perf_counter() - started
        log.info("training %s: done in %.0f s", name, seconds[name])

    # each in a copy of this context: the placement settings (semi2i.placement.on_driver_node) are context
    # variables, which the pool's threads would otherwise not see
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="training") as pool:
        futures = [pool.submit(contextvars.copy_context().run, timed, name, fit) for name, fit in jobs]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return seconds
