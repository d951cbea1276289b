"""An adapt run's two independent chains of stages, run side by side ("lanes").

After ingest, an adapt run is two chains that meet only at the report:

    semi2i:     train SemI2I (each seed) -> stylize with it -> fine-tune -> map the target -> label-free scores
    baselines:  train the source U-net and the GAN baselines -> stylize with them -> fine-tune, oracle -> map -> scores

(the SemI2I fine-tune starts from the source U-net, the one edge between them). Stage after stage, every
stage waits for the slowest method in it. In lanes, each chain runs its own stages one after the other, and
the lanes run at once: on a multi-node cluster each lane's runs and pieces spread over their own CPUs or
GPUs; on one node the lanes share its cores, every training with an even share as its torch threads.
Sharing pays because two 1-thread runs do more work than one 2-thread run: on the 2-core Zen 4 host, two
concurrent 1-thread SemI2I steps took 0.210 and 0.216 s against 0.124 s for one 2-thread step
(``benchmarks/bench_semi2i.py --threads 1|2 --layouts inductor``), 1.16x the work per second, and the
driver's and Ray's single-threaded gaps (run launches, ingesting the stylized stores, tone checks,
scoring) overlap with the other lane's compute. The two lanes are of similar length on the Dubai pairs
(SemI2I's chain is about half of a quick-profile run's compute), so neither waits long for the other.

The lanes' work stays resumable stage by stage (every output is skipped when it exists), and each
lane's Ray Train runs have their own names (``ray/<name>``), so a re-run resumes each lane where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import logging
import threading
import functools
import time
from typing import TYPE_CHECKING, Callable

from semi2i import placement
from semi2i.adapt_config import TRAINING_STAGES
from semi2i.semi2i_seeds import base_method
from semi2i.training.distributed import Scaling

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)

#: a lane's step: its stage name and what runs it
Step = tuple[str, Callable[[], None]]


@dataclasses.dataclass
class Lane:
    """A chain of stages that runs in order, beside the other lanes."""

    name: str
    steps: list[Step]


def lanes_fit(scaling: Scaling, lanes: int, cpus: float, gpus: float) -> bool:
    """Whether ``lanes`` lanes can each hold their trainings' workers at once (a GPU, or a CPU, per worker):
    otherwise one lane's Ray Train run would wait for the other's to end, and nothing is gained."""
    if lanes < 2:
        return False
    need = lanes * scaling.num_workers
    return gpus >= need if scaling.use_gpu else cpus >= need


def lane_scaling(scaling: Scaling, lanes: int, cpus: float, node_cpus: int) -> Scaling:
    """The scaling each of ``lanes`` side-by-side lanes trains with: an even share of the cluster's ``cpus``
    as each worker's threads (at most a node's ``node_cpus``), so the lanes do not oversubscribe the cores.
    With a split share the workers read their own patches (``data: auto`` would pick Ray Data for the
    cores the other lane is about to use). GPU runs and a set ``threads_per_worker`` are kept."""
    if scaling.use_gpu or scaling.threads_per_worker:
        return scaling
    threads = max(1, min(node_cpus, int(cpus) // (lanes * scaling.num_workers)))
    if threads >= scaling.threads():
        return scaling
    data = "worker" if scaling.data == "auto" else scaling.data
    return dataclasses.replace(scaling, threads_per_worker=threads, data=data)


def run_lanes(lanes: list[Lane], *, timings: dict[str, float],
              after: Callable[[dict[str, list[dict]]], None] | None = None) -> None:
    """Run each lane's steps in order, the lanes at once on threads of this process (which only waits:
    the work is in Ray Train runs and Ray tasks). Each step's seconds go into ``timings`` as
    ``<stage>/<lane>``; ``after(where)`` (publishing, ``placement.json``) runs after each step, one at a time.
    A failed lane stops there while the others run to their end (a Ray Train run cannot be stopped half-way
    cleanly); the first failure is raised afterwards, and a re-run resumes."""
    lock = threading.Lock()
    where = placement.current()
    failures: list[BaseException] = []  # in the order they happened: a later one may only follow from it

    def run(lane: Lane) -> None:
        for stage, step in lane.steps:
            started = time.perf_counter()
            try:
                step()
                with lock:  # a failed publication fails the lane too: the pool would swallow it silently
                    if after is not None:
                        after(where)
                    key = f"{stage}/{lane.name}"
                    timings[key] = time.perf_counter() - started
            except BaseException as exc:
                with lock:
                    failures.append(exc)
                log.error("lane %s: stage %s failed: %s", lane.name, stage, exc)
                return
            log.info("stage %s: %.1f s", key, timings[key])

    log.info("lanes side by side: %s", "; ".join(f"{lane.name}: {' -> '.join(s for s, _ in lane.steps)}" for lane in lanes))
    # each thread runs in a copy of this context: the placement settings (on_cluster, on_driver_node, the
    # recording) are context variables, which a new thread would otherwise not see
    with concurrent.futures.ThreadPoolExecutor(len(lanes), thread_name_prefix="lane") as pool:
        for lane in lanes:
            pool.submit(contextvars.copy_context().run, run, lane)
    if failures:
        raise failures[0]


class Gate:
    """Set once by one lane (success or not), waited for by another: the SemI2I lane's fine-tune waits for
    the baselines lane's trainings, which write the source U-net it starts from."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def opens_after(self, step: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            try:
                step()
            finally:
                self._event.set()
        return wrapped

    def waits_for(self, step: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            self._event.wait()
            step()
        return wrapped


def adapt_lanes(run: "AdaptRun", stages: list[str]) -> list[Lane] | None:
    """The lanes of an adapt run's ``stages`` between ingest and report: SemI2I's (each seed) and the other
    methods'. None, for the stages to run one after another, where the config turns lanes off (``lanes:
    false``), Ray is not up (a library call), one chain is all there is, or the cluster cannot hold both
    lanes' training workers at once."""
    semi2i = [m for m in run.candidates if base_method(m) == "semi2i"]
    others = [m for m in run.candidates if base_method(m) != "semi2i"]
    if not run.cfg.lanes or not semi2i or not others or not placement.ray_up():
        return None
    import ray

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0), res.get("GPU", 0)
    if not lanes_fit(run.scaling, 2, cpus, gpus):
        return None
    scaling = lane_scaling(run.scaling, 2, cpus, placement.node_cpus())
    # lanes sharing a node's cores: a mapping's pieces take a lane's share too (a piece of a whole node's CPUs
    # would wait for the other lane's training to end, with the freed core idle meanwhile)
    map_pieces = max(1, int(cpus) // scaling.threads()) if scaling is not run.scaling else None
    trainings = [s for s in TRAINING_STAGES if s in stages]
    others_trained = [s for s in trainings if s != "semi2i"]
    gate = Gate()
    # the SemI2I fine-tune starts from the source U-net, which the other lane's trainings write
    after_others_trained = gate.waits_for if others_trained else (lambda step: step)
    train = functools.partial(run.train_models, scaling=scaling, share=0.5)  # each lane's trainings in its half
    lane_semi2i: list[Step] = [("training", functools.partial(train, ["semi2i"]))] if "semi2i" in trainings else []
    lane_others: list[Step] = [("training", gate.opens_after(functools.partial(train, others_trained)))] if others_trained else []
    for lane, methods, name in ((lane_semi2i, semi2i, "finetune_semi2i"), (lane_others, others, "finetune")):
        if "stylize" in stages:
            lane.append(("stylize", functools.partial(run.stage_stylize, methods)))
        if "finetune" in stages:
            finetune = functools.partial(run.stage_finetune, methods, name=name, scaling=scaling)
            lane.append(("finetune", after_others_trained(finetune) if lane is lane_semi2i else finetune))
        if "segment" in stages:
            lane.append(("segment", functools.partial(run.stage_segment, methods, map_pieces=map_pieces)))
    if not (lane_semi2i and lane_others):
        return None
    if "report" in stages:  # each lane scores its methods for the report, so that neither waits for the other
        for lane, methods in ((lane_semi2i, semi2i), (lane_others, others)):
            lane.append(("label_free", functools.partial(run.stage_label_free, methods)))
    return [Lane("semi2i", lane_semi2i), Lane("others", lane_others)]
