"""Multi-city adaptation (jobs/adapt_multi.py): per-city Algorithm 1, one shared generator stylizing any
source into any target with the target's statistics, a tiny 3-city run with every ordered pair in the
report (and a resume that trains nothing, a killed multi-city training that resumes to the uninterrupted
result), bad configs failing before any work."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import ran_off_the_driver
from semi2i.checkpoints import load_checkpoint
from semi2i.config import ConfigError, SemI2IConfig
from semi2i.data.normalize import BandStats
from semi2i.models.multicity import MultiCityGenerator, MultiCityStyleStats
from semi2i.multicity import METHOD, MultiCityRun, load_multicity_config
from semi2i.stylizers.multicity import MultiCityStylizer
from semi2i.training.distributed import Scaling, fit_multicity
from semi2i.training.multicity_step import MultiCityStep, pair_for_step

TINY_SEMI2I = {"base_width": 4, "n_res_blocks": 1, "disc_width": 4, "patch_size": 32, "epochs": 2, "decay_epoch": 1,
               "max_steps_per_epoch": 2, "checkpoint_every": 2, "log_every": 1}
TINY = {
    "name": "tiny_multi",
    "profile": "quick",
    "synthetic": {"size": 96, "rasters": 1, "seed": 2},
    "overrides": {
        "patch_size": 32,
        "overlap": 8,
        "semi2i": TINY_SEMI2I,
        "unet": {"base_width": 4, "depth": 2, "patch_size": 32, "batch_size": 2, "train_steps": 3, "finetune_steps": 2},
        "colormapgan": {"patch_size": 32},  # unused here, but the profile checks every section against the grid
        "cyclegan": {"patch_size": 32},
    },
}
CITIES = ["city_a", "city_b", "city_c"]


def test_per_city_statistics_follow_algorithm_1():
    style = MultiCityStyleStats(3, 2, d_rate=0.5)
    assert torch.equal(style.mu, torch.zeros(3, 2)) and torch.equal(style.sigma, torch.zeros(3, 2))  # μ_g, σ_g ← 0
    style.update(0, torch.tensor([2.0, 4.0]), torch.tensor([4.0, 8.0]))
    style.update(0, torch.tensor([4.0, 0.0]), torch.tensor([0.0, 2.0]))
    style.update(2, torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]))
    # city 0: 0.5·(0.5·0 + 0.5·2) + 0.5·4 = 2.5 ... by hand for both channels
    assert torch.allclose(style.style(0)[0], torch.tensor([2.5, 1.0]))
    assert torch.allclose(style.style(0)[1], torch.tensor([1.0, 3.0]))
    assert torch.equal(style.style(1)[0], torch.zeros(2))  # never seen: untouched
    assert torch.allclose(style.style(2)[0], torch.tensor([0.5, 0.5])) and torch.allclose(style.style(2)[1], torch.ones(2))
    with pytest.raises(ValueError):
        style.update(1, torch.zeros(3), torch.zeros(3))


def test_training_step_updates_only_the_pairs_statistics():
    cfg = SemI2IConfig(**{**TINY_SEMI2I, "d_rate": 0.9})
    step = MultiCityStep(cfg, CITIES)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        emb_a, _ = step.generator.enc(a)  # what Algorithm 1 should see for city 0, before the update
    losses = step.train_step(a, b, 0, 2)
    assert all(np.isfinite(v) for v in losses.values()) and step.step == 1
    assert torch.allclose(step.style.mu[0], 0.1 * emb_a.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.equal(step.style.mu[1], torch.zeros_like(step.style.mu[1]))
    assert (step.style.sigma[0] > 0).all() and (step.style.sigma[2] > 0).all()
    # the step's state round-trips
    other = MultiCityStep(cfg, CITIES)
    other.load_state_dict(step.state_dict())
    assert torch.equal(other.style.mu, step.style.mu) and other.step == 1


def test_pairs_are_deterministic_ordered_and_cover_every_pair():
    pairs = [pair_for_step(3, s, 3) for s in range(200)]
    assert pairs == [pair_for_step(3, s, 3) for s in range(200)]
    assert all(i != j for i, j in pairs)
    assert set(pairs) == {(i, j) for i in range(3) for j in range(3) if i != j}


def test_shared_generator_stylizes_with_the_targets_statistics():
    torch.manual_seed(0)
    generator = MultiCityGenerator(3, width=4, n_res_blocks=1).eval()
    style = MultiCityStyleStats(3, generator.style_channels)
    style.mu.copy_(torch.randn(3, generator.style_channels))
    style.sigma.copy_(torch.rand(3, generator.style_channels) + 0.5)
    stats = BandStats(mean=np.full(3, 100.0), std=np.full(3, 30.0), quantiles=np.tile(np.linspace(0, 255, 1001), (3, 1)))
    image = np.random.default_rng(0).integers(0, 256, (3, 40, 44)).astype(np.uint8)

    def run(target: str) -> np.ndarray:
        return MultiCityStylizer(generator, style, CITIES, "city_a", target, stats, stats, tile_size=32, overlap=8).stylize(image)

    to_b = run("city_b")
    assert to_b.shape == (3, 40, 44) and to_b.dtype == np.float32
    assert np.array_equal(to_b, run("city_b"))  # deterministic
    assert not np.allclose(to_b, run("city_c"))  # another target, another style
    style.mu[2] += 1.0  # another city's statistics do not matter for a -> b
    assert np.array_equal(to_b, run("city_b"))
    style.mu[1] += 1.0  # the target's do
    assert not np.allclose(to_b, run("city_b"))
    with pytest.raises(ValueError, match="not in the model"):
        run("city_x")


@pytest.mark.slow
@pytest.mark.ray
def test_tiny_three_city_run_reports_every_pair_and_resumes(tmp_path, ray_session):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    cfg = load_multicity_config(config)
    assert cfg.city_names == CITIES and len(cfg.pairs) == 6
    run = MultiCityRun(cfg, tmp_path / "run")
    report = run.run()

    assert report["cities"] == CITIES and report["sources"] == CITIES and report["targets"] == CITIES
    assert report["profile"] == "quick" and report["classes"] == ["building", "road", "vegetation", "water", "land"]
    expected = {f"{s}->{t}" for s in CITIES for t in CITIES if s != t}
    assert set(report["pairs"]) == expected
    for key, entry in report["pairs"].items():
        assert key == f"{entry['source']}->{entry['target']}"
        assert list(entry["methods"]) == ["source_only", METHOD]
        for m in entry["methods"].values():
            assert set(m["iou"]) == set(report["classes"])
            assert 0 <= m["pixel_accuracy"] <= 100 and m["miou"] is not None and 0 <= m["miou"] <= 100
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
    table = (tmp_path / "run" / "report.md").read_text()
    assert sum(line.startswith("| city_") for line in table.splitlines()) == 12  # one row per (pair, method)
    # one model for every target; one fine-tuned U-net per pair
    assert (tmp_path / "run" / "multicity.pt").exists()
    assert len(list((tmp_path / "run").glob("unet_*_to_*.pt"))) == 6
    # the one stage runner recorded where the pixel work ran: on the worker node, not in this driver
    places = json.loads((tmp_path / "run" / "placement.json").read_text())["stages"]
    assert {"ingest", "stylize", "map", "score"} <= set(places) and ran_off_the_driver(places) == []

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("*.pt")}
    again = MultiCityRun(load_multicity_config(config), tmp_path / "run")
    assert again.run() == report
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again.timings["multicity"] < 1.0 and again.timings["unet_source"] < 1.0 and again.timings["finetune"] < 1.0

    # the multi-city loop killed after its checkpoint at step 2 and restarted from it ends where an uninterrupted run
    # ends, its patches read by Ray Data (the session cluster has a CPU beside the worker's) or by the worker itself
    stores = {c: tmp_path / "run" / "stores" / f"{c}.zarr" for c in CITIES}
    semi2i = dataclasses.replace(cfg.profile.semi2i, checkpoint_every=2, max_steps_per_epoch=3, preview_every=1000)
    one = Scaling(num_workers=1, threads_per_worker=1, max_failures=1)
    whole = fit_multicity(semi2i, stores, tmp_path / "whole", overlap=8, scaling=dataclasses.replace(one, data="worker"))
    killed = fit_multicity(semi2i, stores, tmp_path / "killed", overlap=8, scaling=one, crash_at_step=3)
    assert whole["step"] == killed["step"] >= 4 and (tmp_path / "killed" / ".crashed-multicity-3").exists()
    assert whole["data_plane"] == "worker" and killed["data_plane"] == "ray_data"
    assert killed["worker_pid"] not in killed["reader_pids"]
    a, b = (load_checkpoint(d / "multicity.pt") for d in (tmp_path / "whole", tmp_path / "killed"))
    assert a["step"] == b["step"] == whole["step"]
    for part, values in a.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    torch.testing.assert_close(b[part][key], value, rtol=1e-4, atol=1e-6, msg=f"{part}.{key}")


def test_bad_configs_fail_before_any_work(tmp_path, write):
    rgb = write(tmp_path / "x" / "img.tif", np.ones((3, 40, 40), np.uint8))
    nir = write(tmp_path / "y" / "img.tif", np.ones((4, 40, 40), np.uint8))
    labels = write(tmp_path / "x" / "lab.tif", np.zeros((40, 40), np.uint8))
    base = {"classes": ["a", "b"], "cities": {"x": {"images": str(rgb), "labels": str(labels)}, "y": {"images": str(nir)}}}

    mismatched = tmp_path / "bands.yaml"
    mismatched.write_text(yaml.safe_dump({**base, "sources": ["x"], "targets": ["y"]}))
    with pytest.raises(ConfigError, match=r"different band counts \(x: 3, y: 4\)"):
        load_multicity_config(mismatched)

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({**base, "sources": ["x", "nowhere"], "targets": ["y"]}))
    with pytest.raises(ConfigError, match="unknown city 'nowhere' in sources"):
        load_multicity_config(unknown)
    assert not (tmp_path / "run").exists()

    # a key the schema refuses and an unknown city: both reported at once
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({**base, "sources": ["x", "nowhere"], "targets": ["y"], "worker": 2}))
    with pytest.raises(ConfigError) as refused:
        load_multicity_config(both)
    assert "'worker'" in str(refused.value) and "unknown city 'nowhere' in sources" in str(refused.value)

    synthetic = tmp_path / "syn.yaml"
    synthetic.write_text(yaml.safe_dump({"synthetic": {}, "targets": ["z"]}))
    with pytest.raises(ConfigError, match="unknown city 'z' in targets"):
        load_multicity_config(synthetic)
