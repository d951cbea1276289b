"""Ray Train: synchronized style statistics on 2 workers, kill-and-resume equality (the reference reads
its patches in the workers, the killed and resumed runs through Ray Data: both readers must give the same
run), U-net fine-tune on stylized patches. Few and small: every TorchTrainer start costs ~10-20 s on 2 cores."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from semi2i.checkpoints import SEMI2I_CHECKPOINT, load_checkpoint
from semi2i.config import SemI2IConfig, UNetTrainConfig
from semi2i.data.ingest import ingest_city
from semi2i.data.patches import city_windows, step_windows
from semi2i.data.store import CityStore
from semi2i.data.stream import iter_patches
from semi2i.training.distributed import (PREEMPTION_WATCHER_ENV, Scaling, fit_semi2i, fit_unet, fit_unets, started_ray_here,
                                         unet_job)
from semi2i.training.step_data import StepPlan
from semi2i.training.schedule import cosine_learning_rate
from semi2i.training.semi2i_step import SemI2IStep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CFG = SemI2IConfig(base_width=4, n_res_blocks=1, disc_width=4, patch_size=32, epochs=2, decay_epoch=1, max_steps_per_epoch=6,
                   checkpoint_every=2, log_every=1, preview_every=1000, seed=3)
STEPS = 6
TWO = Scaling(num_workers=2, threads_per_worker=1, max_failures=0)  # the session cluster has a 3rd CPU: Ray Data reads


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    from semi2i.demo.cities import make_demo_cities

    root = tmp_path_factory.mktemp("cities")
    files = make_demo_cities(root / "data", size=96, rasters_per_city=1, seed=1)
    stores = {}
    for name, f in files.items():
        stores[name] = ingest_city([str(p) for p in f.images], root / f"{name}.zarr", labels=[str(p) for p in f.labels],
                                   classes=root / "data" / "classes.json", min_size=32, progress=False)
    return stores["demo_source"], stores["demo_target"]


@pytest.fixture(scope="module")
def reference(cities, tmp_path_factory, ray_session):
    """An uninterrupted 2-worker run of STEPS steps, each worker reading its own patches."""
    source, target = cities
    run = tmp_path_factory.mktemp("reference")
    summary = fit_semi2i(CFG, source.path, target.path, run, overlap=8, scaling=dataclasses.replace(TWO, data="worker"))
    assert summary["data_plane"] == "worker" and summary["reader_pids"] == [summary["worker_pid"]]
    return summary, load_checkpoint(run / SEMI2I_CHECKPOINT)


def _assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for part in ("generator", "disc_a", "disc_b", "style"):
        for key, value in a[part].items():
            torch.testing.assert_close(value, b[part][key], atol=atol, rtol=0 if atol == 0 else 1e-4, msg=f"{part}.{key}")


def test_two_workers_hold_identical_style_stats_equal_to_single_process(cities, reference):
    source, target = cities
    summary, state = reference
    assert summary["step"] == STEPS
    per_rank = summary["style_stats_per_rank"]
    assert len(per_rank) == 2 and np.array_equal(per_rank[0], per_rank[1])  # bit-identical on both ranks
    assert np.abs(per_rank[0]).sum() > 0

    # Single process, batch 2 = (rank 0's patch, rank 1's patch): its batch-mean mu/sigma is the
    # average of the two ranks' statistics and its gradients the DDP average, so Algorithm 1 must
    # give the same global statistics (and the same weights) as the 2-worker run.
    # (Adam turns float rounding differences into parameter differences of up to ~lr per step, hence
    # the tolerance; a run that did NOT average the ranks' statistics is 10x further away, see below.)
    expected, single = _single_process(source, target, ranks=(0, 1))
    np.testing.assert_allclose(per_rank[0], expected, rtol=2e-3, atol=1e-5)
    # Weights: Adam's first steps are ~lr·sign(g), so parameters with near-zero gradients may flip on
    # rounding noise; compare mean distances instead of elementwise. The replay must be much closer to
    # the distributed run than the rank-0-only replay is (and than training moved the weights).
    rank0_only, single_rank0 = _single_process(source, target, ranks=(0,))
    init = SemI2IStep.create(dataclasses.replace(CFG, in_bands_a=source.num_bands, in_bands_b=target.num_bands)).state_dict()
    flat = lambda st: torch.cat([v.flatten().float() for part in ("generator", "disc_a", "disc_b") for v in st[part].values()])
    gap = (flat(state) - flat(single.state_dict())).abs().mean()
    gap_rank0 = (flat(state) - flat(single_rank0.state_dict())).abs().mean()
    moved = (flat(state) - flat(init)).abs().mean()
    assert state["step"] == STEPS and gap < 0.05 * moved and gap < 0.3 * gap_rank0, (gap, gap_rank0, moved)
    assert np.abs(rank0_only - per_rank[0]).max() > 10 * np.abs(expected - per_rank[0]).max()


def _single_process(source: CityStore, target: CityStore, ranks: tuple[int, ...]):
    """Replay the 2-worker run's data in one process with a batch made of the given ranks' patches."""
    cfg = dataclasses.replace(CFG, in_bands_a=source.num_bands, in_bands_b=target.num_bands)
    single = SemI2IStep.create(cfg)
    wa, wb = city_windows(source, cfg.patch_size, 8), city_windows(target, cfg.patch_size, 8)
    spe = min(len(wa), len(wb), cfg.max_steps_per_epoch) // 2

    def batch(windows, seed, s):
        picked = [w for r in ranks for w in step_windows(windows, seed, s, r, 2, 1)]
        return torch.from_numpy(next(iter_patches(picked, batch_size=len(picked), normalize="unit"))["image"])

    for s in range(STEPS):
        single.set_epoch(s // spe)
        single(batch(wa, cfg.seed, s), batch(wb, cfg.seed + 1_000_003, s))
    return torch.cat([buf.flatten() for buf in single.style.buffers()]).numpy(), single


def test_killed_run_resumes_to_the_uninterrupted_result(cities, reference, tmp_path):
    source, target = cities
    _, expected = reference
    # killed after the checkpoint at step 4 (no retries): the run fails ...
    with pytest.raises(Exception, match="injected failure at step 5"):
        fit_semi2i(CFG, source.path, target.path, tmp_path, overlap=8, scaling=TWO, crash_at_step=5)
    assert not (tmp_path / SEMI2I_CHECKPOINT).exists()
    # ... and started again on the same run folder, it resumes from step 4 and ends where the
    # uninterrupted run ended
    _wait_for_idle_cluster()
    summary = fit_semi2i(CFG, source.path, target.path, tmp_path, overlap=8, scaling=TWO)
    assert summary["step"] == STEPS
    _assert_read_by_ray_data(summary)
    _assert_same_state(load_checkpoint(tmp_path / SEMI2I_CHECKPOINT), expected, atol=1e-6)


def _wait_for_idle_cluster(timeout_s: float = 60.0) -> None:
    """Wait until Ray has every CPU of the session's cluster back. The data plane is chosen from the CPUs free when a
    run starts (``Scaling.data_plane``), and a run that has just failed gives its workers' CPUs back a moment later:
    started in that moment, two 1-CPU workers on the 3-CPU cluster see no idle core and read their own patches."""
    import time

    import ray

    total, deadline = ray.cluster_resources().get("CPU", 0), time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.1)


def _assert_read_by_ray_data(summary: dict) -> None:
    """The patches came from Ray Data tasks (other processes), not from the training worker."""
    assert summary["data_plane"] == "ray_data", summary
    assert summary["reader_pids"] and summary["worker_pid"] not in summary["reader_pids"], summary


def test_lost_worker_group_restarts_from_checkpoint(cities, reference, tmp_path):
    source, target = cities
    _, expected = reference
    retrying = dataclasses.replace(TWO, max_failures=1)
    _wait_for_idle_cluster()
    summary = fit_semi2i(CFG, source.path, target.path, tmp_path, overlap=8, scaling=retrying, crash_at_step=3)
    assert summary["step"] == STEPS and (tmp_path / ".crashed-semi2i-3").exists()
    _assert_read_by_ray_data(summary)
    _assert_same_state(load_checkpoint(tmp_path / SEMI2I_CHECKPOINT), expected, atol=1e-6)


def test_unet_finetune_consumes_stylized_patches_with_source_labels(cities, tmp_path, ray_session):
    from semi2i.stylize import stylize_city
    from semi2i.stylizers import load_stylizer

    source, target = cities
    stylizer = load_stylizer("histogram_matching", source_stats=source.band_stats, target_stats=target.band_stats)
    fake = stylize_city(source, stylizer, tmp_path / "fake", target_dtype=target.dtype)
    assert [r.id for r in fake.rasters] == [r.id for r in source.rasters] and fake.rasters[0].crs == source.rasters[0].crs

    # a cosine fine-tune (the quick profile's) takes step k at cosine_learning_rate(k): its last (second) step
    # at half the rate; the source training is not a fine-tune (no decay). (channels_last training is the
    # same arithmetic: tests/test_unet.py)
    cfg = UNetTrainConfig(base_width=4, depth=2, patch_size=32, batch_size=2, train_steps=2, finetune_steps=2, lr=1e-3,
                          finetune_lr_schedule="cosine")
    one = Scaling(num_workers=1, threads_per_worker=1, max_failures=0)
    fit_unet(cfg, [source.path], tmp_path, stage="unet_source", output="unet_source.pt", overlap=8, scaling=one)
    fit_unet(cfg, [fake.path], tmp_path, stage="unet_finetune", output="unet_finetune.pt", overlap=8, scaling=one,
             init=tmp_path / "unet_source.pt")
    tuned = load_checkpoint(tmp_path / "unet_finetune.pt")
    assert tuned["step"] == 2
    assert tuned["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cosine_learning_rate(1, 1e-3, 2)) == 5e-4
    assert load_checkpoint(tmp_path / "unet_source.pt")["optimizer"]["param_groups"][0]["lr"] == 1e-3
    # the fine-tune keeps the source model's normaliser
    np.testing.assert_allclose(tuned["stats"]["mean"], source.band_stats.mean)

    # what the fine-tune loop reads: stylized pixels, source labels
    windows = city_windows(fake, 32, 8)
    batch = StepPlan(((tuple(windows), 0),), rank=0, world=1, per_worker=2, normalize="raw", labels=True).read(np.array([0]))
    for i, w in enumerate(step_windows(windows, 0, 0, 0, 1, 2)):
        src_image, src_label = source.read_window(w.raster, w.y, w.x, 32, 32)
        fake_image, _ = fake.read_window(w.raster, w.y, w.x, 32, 32)
        np.testing.assert_array_equal(batch["patch_label"][0][i], src_label)
        np.testing.assert_array_equal(batch["patch"][0][i], fake_image.astype(np.float32))
        assert not np.array_equal(fake_image, src_image)

    # adapt batches its fine-tunes and the oracle into one Ray Train run: each job must end exactly where
    # its own run does (same init, data order and normaliser), whatever ran before it in the worker. The
    # oracle here trains from scratch with train_lr_schedule: cosine, so its last (second) step is at half the rate
    cosine = dataclasses.replace(cfg, train_lr_schedule="cosine")
    jobs = [unet_job(cfg, [fake.path], stage="ft", output="batched_finetune.pt", init=tmp_path / "unet_source.pt", overlap=8),
            unet_job(cosine, [target.path], stage="oracle", output="batched_oracle.pt", overlap=8, seed=5)]
    fit_unets(jobs, tmp_path, "batched", one)
    fit_unet(cosine, [target.path], tmp_path, stage="oracle", output="oracle.pt", overlap=8, seed=5, scaling=one)
    assert load_checkpoint(tmp_path / "oracle.pt")["optimizer"]["param_groups"][0]["lr"] == 5e-4
    for batched, alone in (("batched_finetune.pt", "unet_finetune.pt"), ("batched_oracle.pt", "oracle.pt")):
        a, b = load_checkpoint(tmp_path / batched), load_checkpoint(tmp_path / alone)
        assert a["step"] == b["step"]
        for key, value in a["model"].items():
            torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=f"{batched}: {key}")
    assert fit_unets(jobs, tmp_path, "batched", one) is None  # finished jobs are not retrained



def test_killed_finetune_resumes_to_the_uninterrupted_result(cities, tmp_path, ray_session):
    """A cosine fine-tune killed after its checkpoint at step 2 and restarted from it (Ray Data reading, as
    the session cluster has a CPU beside the worker's) ends bit-for-bit where an uninterrupted one (the
    worker reading) ends: same weights, optimizer state and learning rate."""
    source, target = cities
    cfg = UNetTrainConfig(base_width=4, depth=2, patch_size=32, batch_size=2, train_steps=2, finetune_steps=5, lr=1e-3,
                          finetune_lr_schedule="cosine")
    one = Scaling(num_workers=1, threads_per_worker=1, max_failures=1)
    fit_unet(cfg, [source.path], tmp_path, stage="unet_source", output="unet_source.pt", overlap=8, scaling=one)
    options = {"init": tmp_path / "unet_source.pt", "overlap": 8, "checkpoint_every": 2, "seed": 4}
    whole = fit_unet(cfg, [target.path], tmp_path, stage="whole", output="whole.pt", scaling=dataclasses.replace(one, data="worker"),
                     **options)
    killed = fit_unet(cfg, [target.path], tmp_path, stage="killed", output="killed.pt", scaling=one, crash_at_step=3, **options)
    assert (tmp_path / ".crashed-killed-3").exists() and whole["data_plane"] == "worker"
    _assert_read_by_ray_data(killed)
    a, b = load_checkpoint(tmp_path / "whole.pt"), load_checkpoint(tmp_path / "killed.pt")
    assert a["step"] == b["step"] == 5
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == cosine_learning_rate(4, 1e-3, 5)
    assert not torch.equal(a["model"][next(iter(a["model"]))], load_checkpoint(tmp_path / "unet_source.pt")["model"][next(iter(a["model"]))])


@pytest.mark.ray
def test_ray_trains_without_the_preemption_watcher_only_where_this_process_started_ray(ray_session):
    # the session's cluster was joined (ray.init(address=...)), as a job joins a cloud cluster: the watcher stays
    assert not started_ray_here()
    # a process that starts a Ray of its own (a laptop) turns it off (with setdefault: a user's own value wins)
    code = ("import os, ray; from semi2i.training.distributed import set_ray_train_env; "
            "ray.init(address='local', num_cpus=1, include_dashboard=False, log_to_driver=False); set_ray_train_env(); "
            f"print(os.environ.get({PREEMPTION_WATCHER_ENV!r}), os.environ['RAY_TRAIN_HEALTH_CHECK_INTERVAL_S'])")
    env = {k: v for k, v in os.environ.items() if k not in (PREEMPTION_WATCHER_ENV, "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["0", "0.2"], out.stdout[-500:] + out.stderr[-2000:]
