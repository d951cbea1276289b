"""Independent trainings run side by side (semi2i.trainings): how many at once, their threads, failures."""

from __future__ import annotations

import threading
import time

import pytest

from semi2i.training.distributed import Scaling
from semi2i.trainings import concurrent_trainings, run_trainings


def test_how_many_fit_each_with_what_it_would_have_alone():
    assert concurrent_trainings(cpus=2, workers=1, threads=1, gpu=False, gpus=0, wanted=3) == 2
    assert concurrent_trainings(cpus=2, workers=1, threads=2, gpu=False, gpus=0, wanted=3) == 1  # one small machine
    assert concurrent_trainings(cpus=2, workers=2, threads=1, gpu=False, gpus=0, wanted=3) == 1
    assert concurrent_trainings(cpus=64, workers=2, threads=8, gpu=False, gpus=0, wanted=3) == 3  # a cluster
    assert concurrent_trainings(cpus=64, workers=2, threads=8, gpu=False, gpus=0, wanted=9) == 4
    assert concurrent_trainings(cpus=16, workers=1, threads=16, gpu=True, gpus=1, wanted=3) == 1  # one GPU: one at a time
    assert concurrent_trainings(cpus=16, workers=2, threads=8, gpu=True, gpus=4, wanted=3) == 2
    assert concurrent_trainings(cpus=0, workers=1, threads=1, gpu=False, gpus=0, wanted=2) == 1


@pytest.mark.ray
def test_two_one_thread_runs_at_once_on_two_cpus_and_a_failure_waits_for_the_others(ray_session):
    # the session cluster has 3 CPUs, one of them left for Ray Data to read the runs' patches on
    events: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    first_two_started = threading.Barrier(2, timeout=30)  # deadlocks (and fails) unless the first two overlap

    def job(name: str, fail: bool = False, wait: bool = False):
        def fit(scaling: Scaling) -> None:
            with lock:
                events.append((name, "start", scaling.threads()))
            if wait:
                first_two_started.wait()
            time.sleep(0.2)
            with lock:
                events.append((name, "end", scaling.threads()))
            if fail:
                raise RuntimeError(f"{name} failed")
        return name, fit

    one_thread = Scaling(num_workers=1, threads_per_worker=1)
    seconds = run_trainings([job("long", wait=True), job("short", wait=True), job("third")], one_thread)
    assert set(seconds) == {"long", "short", "third"} and all(s >= 0.2 for s in seconds.values())
    order = [(n, e) for n, e, _ in events]
    assert order.index(("third", "start")) > min(order.index(("long", "end")), order.index(("short", "end")))

    events.clear()
    with pytest.raises(RuntimeError, match="first failed"):
        run_trainings([job("first", fail=True), job("second"), job("after")], one_thread)
    assert {(n, e) for n, e, _ in events} >= {("second", "end"), ("after", "end")}  # the others ran to their end
