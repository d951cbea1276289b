"""What each training step reads (semi2i.training.step_data), without Ray: the plan's patches are the
windows step_windows picks, read as the stream reads them; a stream started at step k is the tail of one
started at 0 (what makes a resumed run exact); and who reads is chosen from the cluster's spare CPUs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_raster

from semi2i.data.ingest import ingest_city
from semi2i.data.patches import city_windows, step_windows
from semi2i.data.stream import read_patches, window_columns
from semi2i.training.distributed import Scaling
from semi2i.training.multicity_step import pair_for_step
from semi2i.training.step_data import StepPlan, step_batches


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    root = tmp_path_factory.mktemp("step_data")
    rng = np.random.default_rng(0)
    out = []
    for k in range(3):  # three small "cities", 3 bands, labels 0-2
        write_raster(root / f"c{k}" / "img.tif", rng.integers(1, 256, size=(3, 48, 64)).astype(np.uint8))
        write_raster(root / f"c{k}" / "lbl.tif", rng.integers(0, 3, size=(48, 64)).astype(np.uint8))
        store = ingest_city(str(root / f"c{k}" / "img.tif"), root / f"c{k}.zarr", labels=str(root / f"c{k}" / "lbl.tif"),
                            classes=["a", "b", "c"], min_size=16, progress=False)
        out.append(tuple(city_windows(store, 16, 4)))
    return out


def _expected(windows, seed, step, rank, world, per_worker, normalize="unit"):
    return read_patches(window_columns(step_windows(windows, seed, step, rank, world, per_worker)), normalize)


def test_two_domain_plan_reads_each_domains_windows_for_the_step(windows):
    plan = StepPlan(((windows[0], 3), (windows[1], 1_000_006)), rank=1, world=2, per_worker=2, normalize="unit")
    got = plan.read(np.array([0, 5, 40]))  # 40 steps x 4 patches runs past one epoch of a city's windows
    assert got["a"].shape == (3, 2, 3, 16, 16) and list(got["step"]) == [0, 5, 40]
    for k, step in enumerate([0, 5, 40]):
        np.testing.assert_array_equal(got["a"][k], _expected(windows[0], 3, step, 1, 2, 2)["image"])
        np.testing.assert_array_equal(got["b"][k], _expected(windows[1], 1_000_006, step, 1, 2, 2)["image"])
    assert list(got["a_part"]) == [0, 0, 0] and list(got["b_part"]) == [1, 1, 1] and "a_label" not in got


def test_labelled_plan_reads_zscored_patches_with_labels(windows):
    plan = StepPlan(((windows[2], 9),), rank=0, world=1, per_worker=3, normalize="zscore", labels=True)
    got = plan.read(np.array([7]))
    want = _expected(windows[2], 9, 7, 0, 1, 3, "zscore")
    np.testing.assert_array_equal(got["patch"][0], want["image"])
    np.testing.assert_array_equal(got["patch_label"][0], want["label"])


def test_multicity_plan_reads_the_pair_drawn_for_the_step(windows):
    parts = tuple((w, 5 + 1_000_003 * c) for c, w in enumerate(windows))
    plan = StepPlan(parts, rank=0, world=1, per_worker=1, normalize="unit", pairs_seed=5)
    steps = np.arange(12)
    got = plan.read(steps)
    pairs = [pair_for_step(5, int(s), 3) for s in steps]
    assert [(int(i), int(j)) for i, j in zip(got["a_part"], got["b_part"])] == pairs
    assert len(set(pairs)) > 1  # the pair changes between steps
    for k, (i, j) in enumerate(pairs):
        np.testing.assert_array_equal(got["a"][k], _expected(windows[i], 5 + 1_000_003 * i, k, 0, 1, 1)["image"])
        np.testing.assert_array_equal(got["b"][k], _expected(windows[j], 5 + 1_000_003 * j, k, 0, 1, 1)["image"])


def test_a_stream_started_at_step_k_is_the_tail_of_one_started_at_0(windows):
    plan = StepPlan(((windows[0], 3), (windows[1], 4)), rank=0, world=1, per_worker=2, normalize="unit")
    whole = list(step_batches(plan, 0, 9, "worker"))
    resumed = list(step_batches(plan, 4, 9, "worker"))
    assert [b["step"] for b in whole] == list(range(9)) and [b["step"] for b in resumed] == list(range(4, 9))
    for a, b in zip(whole[4:], resumed):
        for key in ("a", "b"):
            assert np.array_equal(a[key].numpy(), b[key].numpy())
    assert list(step_batches(plan, 9, 9, "worker")) == []
    with pytest.raises(ValueError, match="data plane must be"):
        list(step_batches(plan, 0, 1, "disk"))


def test_reader_errors_reach_the_training_loop(windows, tmp_path):
    from semi2i.data.patches import Window

    plan = StepPlan(((tuple([Window(str(tmp_path / "gone.zarr"), "r", 0, 0, 16)]), 0),), 0, 1, 1, "unit")
    with pytest.raises(Exception, match="gone.zarr"):
        list(step_batches(plan, 0, 2, "worker"))


def test_who_reads_follows_the_idle_cores():
    auto = Scaling(num_workers=2)
    assert auto.data_plane(idle_cores=0, free_cpus=1) == "worker"  # the training's threads use every core: they read
    assert auto.data_plane(idle_cores=1, free_cpus=1) == "ray_data"
    assert Scaling(data="worker").data_plane(idle_cores=8, free_cpus=8) == "worker"
    assert Scaling(data="ray_data").data_plane(idle_cores=0, free_cpus=1) == "ray_data"  # asked for: Ray can schedule it
    with pytest.raises(ValueError, match="needs a CPU beside the 2 training workers'"):
        Scaling(num_workers=2, data="ray_data").data_plane(idle_cores=0, free_cpus=0.5)
