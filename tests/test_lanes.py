"""The adapt run's lanes (semi2i.lanes): SemI2I's chain of stages beside the other methods', without Ray."""

from __future__ import annotations

import threading
import types

import pytest

from semi2i import placement
from semi2i.lanes import Gate, Lane, adapt_lanes, lane_scaling, lanes_fit, run_lanes
from semi2i.training.distributed import Scaling


def test_lanes_fit_where_every_lane_holds_its_training_workers():
    assert lanes_fit(Scaling(), 2, cpus=2, gpus=0)
    assert not lanes_fit(Scaling(), 2, cpus=1, gpus=0)
    assert not lanes_fit(Scaling(num_workers=2), 2, cpus=3, gpus=0)
    assert lanes_fit(Scaling(num_workers=2, use_gpu=True), 2, cpus=0, gpus=4)
    assert not lanes_fit(Scaling(use_gpu=True), 2, cpus=64, gpus=1)
    assert not lanes_fit(Scaling(), 1, cpus=64, gpus=0)


def test_lane_scaling_splits_a_nodes_cores_and_keeps_what_has_room(monkeypatch):
    monkeypatch.setattr("semi2i.training.distributed.node_cpus", lambda: 2)
    # one 2-core node, two lanes: one thread per training, and the workers read their own patches
    shared = lane_scaling(Scaling(), 2, cpus=2, node_cpus=2)
    assert shared.threads() == 1 and shared.data == "worker" and shared.num_workers == 1
    # an explicit data plane is the user's choice, kept
    assert lane_scaling(Scaling(data="ray_data"), 2, cpus=2, node_cpus=2).data == "ray_data"
    # room for both lanes at a node's full threads (two 2-core nodes): unchanged
    assert lane_scaling(Scaling(), 2, cpus=4, node_cpus=2) == Scaling()
    # GPUs and set threads: unchanged
    assert lane_scaling(Scaling(use_gpu=True), 2, cpus=2, node_cpus=2) == Scaling(use_gpu=True)
    assert lane_scaling(Scaling(threads_per_worker=2), 2, cpus=2, node_cpus=2) == Scaling(threads_per_worker=2)
    # an 8-core node: four threads each
    monkeypatch.setattr("semi2i.training.distributed.node_cpus", lambda: 8)
    assert lane_scaling(Scaling(), 2, cpus=8, node_cpus=8).threads() == 4


def test_lanes_run_at_once_each_in_order_with_the_callers_context():
    """Lane a's second step waits for lane b's first: run one lane after the other, this would time out."""
    b_started, order, seen_cluster = threading.Event(), [], []

    def step(name, wait=None, done=None):
        def run():
            if wait is not None:
                assert wait.wait(timeout=20), f"{name}: the other lane never ran beside this one"
            order.append(name)
            seen_cluster.append(placement._CLUSTER.get())
            if done is not None:
                done.set()
        return run

    lanes = [Lane("a", [("first", step("a1")), ("second", step("a2", wait=b_started))]),
             Lane("b", [("first", step("b1", done=b_started)), ("second", step("b2"))])]
    timings, afters = {"ingest": 1.0}, []
    with placement.on_cluster(True):
        run_lanes(lanes, timings=timings, after=afters.append)
    assert order.index("a1") < order.index("a2") and order.index("b1") < order.index("b2")
    assert order.index("b1") < order.index("a2")
    assert seen_cluster == [True] * 4  # the lane threads saw placement.on_cluster
    assert set(timings) == {"ingest", "first/a", "second/a", "first/b", "second/b"}
    assert len(afters) == 4


def test_a_failed_lane_lets_the_other_finish_and_its_error_is_raised():
    ran = []

    def fail():
        raise ValueError("lane a broke")

    lanes = [Lane("a", [("first", fail), ("second", lambda: ran.append("a2"))]),
             Lane("b", [("first", lambda: ran.append("b1")), ("second", lambda: ran.append("b2"))])]
    timings = {}
    with pytest.raises(ValueError, match="lane a broke"):
        run_lanes(lanes, timings=timings)
    assert ran == ["b1", "b2"] and "first/a" not in timings and set(timings) == {"first/b", "second/b"}


def test_a_failed_publication_after_a_step_fails_its_lane_not_silently():
    """``after`` (the run folder's publication) raising used to end its lane's thread unnoticed: the lane's later
    stages never ran and the run went on to report without them."""
    ran = []

    def after(where):
        if "a1" in ran and "a2" not in ran:
            raise FileNotFoundError("unet_semi2i.pt.tmp")

    lanes = [Lane("a", [("first", lambda: ran.append("a1")), ("second", lambda: ran.append("a2"))])]
    with pytest.raises(FileNotFoundError, match="unet_semi2i.pt.tmp"):
        run_lanes(lanes, timings={}, after=after)
    assert ran == ["a1"]


def test_gate_opens_after_its_step_even_when_it_fails():
    gate, ran = Gate(), []

    def broken():
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError):
        gate.opens_after(broken)()
    waiting = threading.Thread(target=gate.waits_for(lambda: ran.append("after")))
    waiting.start()
    waiting.join(timeout=10)
    assert ran == ["after"]


class FakeRun:
    """What adapt_lanes reads of an AdaptRun, with stages that only record their calls."""

    def __init__(self, candidates, lanes=True):
        self.candidates = candidates
        self.cfg = types.SimpleNamespace(lanes=lanes)
        self.scaling = Scaling()
        self.calls = []

    def train_models(self, stages, scaling=None, share=1.0):
        self.calls.append(("train", tuple(stages), scaling.threads(), share))

    def stage_stylize(self, methods=None):
        self.calls.append(("stylize", tuple(methods)))

    def stage_finetune(self, methods=None, *, name="finetune", scaling=None):
        self.calls.append(("finetune", tuple(methods), name))

    def stage_segment(self, methods=None, *, map_pieces=None):
        self.calls.append(("segment", tuple(methods), map_pieces))

    def stage_label_free(self, methods=None):
        self.calls.append(("label_free", tuple(methods)))


ALL_STAGES = ["ingest", "unet_source", "colormapgan", "semi2i", "stylize", "finetune", "segment", "report"]
METHODS = ["source_only", "histogram_matching", "colormapgan", "semi2i", "target_oracle"]


@pytest.fixture
def two_core_cluster(monkeypatch):
    import ray

    monkeypatch.setattr(placement, "ray_up", lambda: True)
    monkeypatch.setattr(placement, "node_cpus", lambda: 2)
    monkeypatch.setattr("semi2i.training.distributed.node_cpus", lambda: 2)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})


def test_adapt_lanes_split_semi2i_from_the_rest(two_core_cluster):
    run = FakeRun(METHODS)
    lanes = adapt_lanes(run, ALL_STAGES)
    assert [(lane.name, [s for s, _ in lane.steps]) for lane in lanes] == [
        ("semi2i", ["training", "stylize", "finetune", "segment", "label_free"]),
        ("others", ["training", "stylize", "finetune", "segment", "label_free"])]
    run_lanes(lanes, timings={})
    others = ("source_only", "histogram_matching", "colormapgan", "target_oracle")
    assert set(run.calls) == {
        ("train", ("semi2i",), 1, 0.5), ("stylize", ("semi2i",)), ("finetune", ("semi2i",), "finetune_semi2i"),
        ("segment", ("semi2i",), 2), ("label_free", ("semi2i",)), ("train", ("unet_source", "colormapgan"), 1, 0.5),
        ("stylize", others), ("finetune", others, "finetune"), ("segment", others, 2), ("label_free", others)}
    # each lane scores its methods last, after its maps: the report then only reads the scores
    assert run.calls.index(("segment", others, 2)) < run.calls.index(("label_free", others))
    # (a mapping's pieces run two at once, one CPU each: a piece of both CPUs would wait for the other lane)
    # SemI2I's fine-tune starts from the source U-net: never before the other lane's trainings
    assert run.calls.index(("train", ("unet_source", "colormapgan"), 1, 0.5)) < \
        run.calls.index(("finetune", ("semi2i",), "finetune_semi2i"))


def test_no_lanes_without_semi2i_beside_others_room_or_the_config(two_core_cluster, monkeypatch):
    assert adapt_lanes(FakeRun(["source_only", "histogram_matching"]), ALL_STAGES) is None
    assert adapt_lanes(FakeRun(["semi2i"]), ALL_STAGES) is None
    assert adapt_lanes(FakeRun(METHODS, lanes=False), ALL_STAGES) is None
    # only SemI2I's stages left to run (--skip unet_source colormapgan stylize ...): one chain, no lanes
    assert adapt_lanes(FakeRun(METHODS), ["ingest", "semi2i", "report"]) is None
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    assert adapt_lanes(FakeRun(METHODS), ALL_STAGES) is None
    monkeypatch.setattr(placement, "ray_up", lambda: False)
    assert adapt_lanes(FakeRun(METHODS), ALL_STAGES) is None


def test_the_semi2i_fine_tune_does_not_wait_when_the_other_lane_trains_nothing(two_core_cluster):
    run = FakeRun(METHODS)
    lanes = adapt_lanes(run, ["stylize", "finetune", "segment"])  # trainings skipped: nothing to wait for
    done = threading.Event()

    def runner():
        run_lanes(lanes, timings={})
        done.set()

    threading.Thread(target=runner, daemon=True).start()
    assert done.wait(timeout=20), "the SemI2I lane waited for a training that never runs"
