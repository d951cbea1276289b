"""semi2i.placement without Ray: where pieces run, what is recorded, and when the cluster is used."""

from __future__ import annotations

import dataclasses
import functools
import os

import pytest

from semi2i import placement


def _square(offset: int, x: int) -> int:
    if x < 0:
        raise ValueError(f"piece {x} failed")
    return x * x + offset


def test_pieces_run_here_in_order_and_are_recorded_once_per_process(monkeypatch):
    monkeypatch.setattr(placement, "ray_up", lambda: False)
    with placement.recording() as outer:
        with placement.on_cluster(), placement.recording() as inner:
            assert placement.run_each(functools.partial(_square, 1), [3, 1, 2], stage="a") == [10, 2, 5]
            assert placement.run_one(lambda: 7, stage="b") == 7
            assert placement.run_each(_square, [], stage="c") == []  # nothing to do: nothing recorded
        assert placement.current() is outer
    here = {"node": None, "host": placement.here()["host"], "pid": os.getpid()}
    assert inner == outer == {"a": [here], "b": [here]}
    with pytest.raises(ValueError, match="piece -1 failed"):
        placement.run_each(functools.partial(_square, 0), [2, -1], stage="a")


def test_pieces_on_local_threads_keep_their_order_and_the_first_failure(monkeypatch):
    """``local_threads``: the items' order whatever finishes first; on a failure the pieces not yet started
    never run, the running ones finish before the error reaches the caller, and the first failed piece in
    the items' order is the one raised."""
    import threading
    import time

    monkeypatch.setattr(placement, "ray_up", lambda: False)
    started, finished, lock = [], [], threading.Lock()

    def piece(x):
        with lock:
            started.append(x)
        time.sleep(0.05 if x in (0, 2) else 0.01 if x > 2 else 0.0)  # 0 and 2 finish after 1 and 3
        if x < 0:
            raise ValueError(f"piece {x} failed")
        with lock:
            finished.append(x)
        return 10 * x

    assert placement.run_each(piece, [0, 1, 2, 3, 4], stage="a", local_threads=3) == [0, 10, 20, 30, 40]
    assert finished != sorted(finished)  # they did run side by side
    started.clear(), finished.clear()
    with pytest.raises(ValueError, match="piece -1 failed"):
        placement.run_each(piece, [0, -1, -2] + list(range(3, 40)), stage="a", local_threads=2)
    assert 0 in finished  # the running piece finished before the error was raised
    assert len(started) < 40  # the pieces after the failure were cancelled


def test_the_cluster_is_used_from_when_ray_comes_up(monkeypatch):
    """A mapping job enters on_cluster before it starts Ray (its input is checked first): the pieces that
    follow must still go to the cluster."""
    up = {"ray": False}
    monkeypatch.setattr(placement, "ray_up", lambda: up["ray"])
    with placement.on_cluster():
        assert not placement.on_cluster_now()
        up["ray"] = True
        assert placement.on_cluster_now()
    assert not placement.on_cluster_now()
    with placement.on_cluster(False):
        assert not placement.on_cluster_now()


def test_the_stage_runner_runs_in_order_times_and_reports_where(monkeypatch):
    monkeypatch.setattr(placement, "ray_up", lambda: True)  # pretend Ray is up: only `cluster` decides
    seen, afters = [], []

    def stage(name):
        def step():
            seen.append((name, placement.on_cluster_now()))
            placement.record(name, [{"node": "n1", "host": "h", "pid": 1}])
        return step

    timings = {"earlier": 1.0}
    out = placement.run_stages([("a", stage("a")), ("b", stage("b"))], timings=timings, cluster=False,
                               after=lambda where: afters.append(sorted(where)))
    assert out is timings and list(timings) == ["earlier", "a", "b"] and all(t >= 0 for t in timings.values())
    assert seen == [("a", False), ("b", False)]  # cluster=False: pieces stay in this process even with Ray up
    assert afters == [["a"], ["a", "b"]]  # after each stage, with the placement recorded so far
    placement.run_stages([("c", stage("c"))])
    assert seen[-1] == ("c", True)


def _fake_ray(monkeypatch, nodes: list[dict], me: str) -> None:
    """A stand-in for a connected Ray: ``ray.nodes()`` and this process's node id."""
    from types import SimpleNamespace

    fake = SimpleNamespace(is_initialized=lambda: True, nodes=lambda: nodes,
                           get_runtime_context=lambda: SimpleNamespace(get_node_id=lambda: me))
    monkeypatch.setitem(__import__("sys").modules, "ray", fake)


def _node(node_id: str, host: str, cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    return {"NodeID": node_id, "NodeManagerAddress": host, "Alive": alive, "Resources": {"CPU": cpus, "GPU": gpus}}


def test_a_run_on_object_storage_keeps_its_work_on_the_drivers_node(monkeypatch):
    """Inside on_driver_node (a run folder on object storage: its local copy is on the driver's disk), work is
    pinned to the driver's node when other machines are in the cluster, and refused in one line when that
    node cannot run it; nodes on the driver's own machine see its disk, so nothing is pinned there."""
    cluster = [_node("head", "10.0.0.1", 4, 1), _node("gpu-worker", "10.0.0.2", 8, 1), _node("gone", "10.0.0.3", 8, 0, False)]
    _fake_ray(monkeypatch, cluster, "head")
    assert placement.node_selector() is None and len(placement.nodes_in_reach()) == 2  # not inside: anywhere
    with placement.on_driver_node():
        assert placement.node_selector() == {"ray.io/node-id": "head"}
        assert [n["NodeID"] for n in placement.nodes_in_reach()] == ["head"]
        placement.check_driver_node("stage map", cpus=4, gpus=1)  # fits: no error
        with pytest.raises(RuntimeError, match=r"^stage map: a run folder on object storage keeps its work on the "
                                               r"driver's node, which has 4 CPUs and 1 GPUs, but it needs 1 and 2"):
            placement.check_driver_node("stage map", cpus=1, gpus=2)
    with placement.on_driver_node(False):
        assert placement.node_selector() is None
    # a zero-CPU head with worker nodes on the same machine (ray.cluster_utils): every node sees the local copy
    _fake_ray(monkeypatch, [_node("head", "127.0.0.1", 0), _node("w1", "127.0.0.1", 2), _node("w2", "127.0.0.1", 1)], "head")
    with placement.on_driver_node():
        assert placement.node_selector() is None and len(placement.nodes_in_reach()) == 3
        placement.check_driver_node("stage map", cpus=2)  # not pinned: not checked against the head


def test_a_sweep_on_object_storage_plans_and_pins_its_trials_on_the_drivers_node(monkeypatch):
    """jobs/tune.py --run-dir s3://...: the trials work in the driver's local copy, so they are planned with
    the driver node's CPUs only and their actors carry a label selector on its node id; a local run folder
    plans with the whole cluster and pins nothing."""
    from ray.tune import PlacementGroupFactory

    from semi2i.adapt_config import adapt_config_from_dict
    from semi2i.tuning.settings import TuneSettings
    from semi2i.tuning.sweep import make_sweep
    from semi2i.tuning.tuner import trial_resources

    cfg = adapt_config_from_dict({"name": "t", "synthetic": {"size": 96}, "classes": ["a", "b"]}, "t.yaml")
    settings = TuneSettings(driver_cpus=1)
    _fake_ray(monkeypatch, [_node("head", "10.0.0.1", 2), _node("w1", "10.0.0.2", 8), _node("w2", "10.0.0.3", 8)], "head")
    local, bucket = make_sweep(cfg, settings, "r"), make_sweep(cfg, settings, "r", on_object_storage=True)
    assert (local.concurrency, bucket.concurrency) == (9, 1)  # 18 CPUs / (1 + 1) vs the head's 2 CPUs
    assert trial_resources(local) == {"cpu": 1, "gpu": 0}
    pinned = trial_resources(bucket)
    assert isinstance(pinned, PlacementGroupFactory) and pinned.bundles == [{"CPU": 1}]
    assert pinned._bound.kwargs["bundle_label_selector"] == [{"ray.io/node-id": "head"}]
    with pytest.raises(RuntimeError, match="^a sweep's trial: a run folder on object storage keeps its work on the driver's node"):
        trial_resources(dataclasses.replace(bucket, settings=TuneSettings(driver_cpus=4)))
