"""The label-free score (semi2i.domain_distance, semi2i.label_free): the Fréchet distance by hand, the score
falls as the training imagery moves away from the target, patches are drawn reproducibly and around
nodata, the pick says how sure it is, and an adapt run on an unlabelled target reports the score alone."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
import yaml

from conftest import write_raster
from semi2i.adapt_report import pick_evidence
from semi2i.data.ingest import ingest_city
from semi2i.data.normalize import BandStats
from semi2i.domain_distance import feature_distances, frechet, sample_patches, store_distance
from semi2i.models.unet import UNet
from semi2i.report_table import label_free_pick, report_markdown


def test_frechet_by_hand():
    a = np.array([[0.0], [2.0]])  # mean 1, variance 2 (unbiased)
    b = np.array([[10.0], [12.0]])  # mean 11, variance 2
    assert frechet(a, b) == pytest.approx(100.0)  # (11 - 1)^2 + 2 + 2 - 2 sqrt(2 * 2)
    c = np.array([[0.0], [4.0]])  # mean 2, variance 8
    assert frechet(a, c) == pytest.approx(1 + 2 + 8 - 2 * 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    assert frechet(x, x) == pytest.approx(0.0, abs=1e-9)
    d = np.diag([1.0, 2.0, 3.0])
    y = x @ d  # covariance D Σ D: the cross term's root is Σ^½ D Σ^½, whose trace is tr(D Σ)
    sa, sb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    shift = ((x.mean(0) - y.mean(0)) ** 2).sum()
    assert frechet(x, y) == pytest.approx(shift + np.trace(sa) + np.trace(sb) - 2 * np.trace(d @ sa), rel=1e-6)


def _texture(seed: int, n: int, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(100, 20, size=(n, 3, 32, 32)).cumsum(axis=3) / 8  # streaky, correlated along x
    return np.clip(base * gain + offset, 0, 255).astype(np.float32)


def test_distance_grows_as_the_training_imagery_moves_away_from_the_target():
    torch.manual_seed(0)
    model = UNet(3, 5, 4, 2)
    def zscore(im):  # as a BandStats normaliser does, with fixed numbers
        return (im - 100.0) / 50.0

    target = _texture(1, 12)
    near = feature_distances(model, _texture(2, 12), target, zscore)  # same kind of imagery, other samples
    far = feature_distances(model, _texture(3, 12, gain=0.5, offset=60), target, zscore)  # low contrast, brighter
    same = feature_distances(model, target, target, zscore)
    assert set(near) == {"deep", "mid", "pixel"}
    for level in near:
        assert same[level] == pytest.approx(0.0, abs=1e-6)
        assert 0 <= near[level] < far[level], (level, near, far)


def test_patches_are_reproducible_and_avoid_nodata(tmp_path):
    image = np.random.default_rng(0).integers(1, 255, size=(3, 96, 96)).astype(np.uint8)
    image[:, :, :48] = 0  # the left half is nodata
    write_raster(tmp_path / "img" / "a.tif", image, nodata=0)
    store = ingest_city(str(tmp_path / "img" / "*.tif"), tmp_path / "a.zarr", name="a", nodata=0, min_size=32)
    patches = sample_patches(store, 32, count=6, seed=3)
    assert patches.shape == (6, 3, 32, 32)
    assert np.all((patches == 0).all(axis=1).mean(axis=(1, 2)) <= 0.1)  # at most 10 % nodata pixels each
    assert np.array_equal(patches, sample_patches(store, 32, count=6, seed=3))
    with pytest.raises(ValueError, match="a.zarr: no raster is 128 px"):
        sample_patches(store, 128)


def test_draws_are_the_one_draw_scores_at_later_seeds_and_the_score_is_their_mean(tmp_path):
    rng = np.random.default_rng(0)
    for name, gain in (("src", 1.0), ("tgt", 0.6)):
        image = np.clip(rng.normal(120, 40, size=(3, 96, 96)).cumsum(axis=2) / 6 * gain, 1, 255).astype(np.uint8)
        write_raster(tmp_path / name / "a.tif", image, nodata=0)
    source = ingest_city(str(tmp_path / "src" / "*.tif"), tmp_path / "src.zarr", name="src", nodata=0, min_size=32)
    target = ingest_city(str(tmp_path / "tgt" / "*.tif"), tmp_path / "tgt.zarr", name="tgt", nodata=0, min_size=32)
    torch.manual_seed(0)
    checkpoint = tmp_path / "unet.pt"
    torch.save({"model": UNet(3, 2, 4, 2).state_dict(), "in_bands": 3, "num_classes": 2, "class_names": ["a", "b"],
                "ignore_index": 255, "unet": {"base_width": 4, "depth": 2, "patch_size": 32},
                "stats": BandStats.from_pixels(rng.uniform(0, 255, (3, 1000))).to_attrs()}, checkpoint)

    three = store_distance(checkpoint, source.path, target.path, count=6, seed=4, draws=3)
    one = [store_distance(checkpoint, source.path, target.path, count=6, seed=seed) for seed in (4, 6, 8)]
    assert three["draws"] == [o["label_free"] for o in one] and all(o["draws"] == [o["label_free"]] for o in one)
    assert len(set(three["draws"])) == 3  # other places, other scores
    assert three["label_free"] == pytest.approx(np.mean(three["draws"]), rel=1e-5)
    for level in ("deep", "mid", "pixel"):
        assert three["distance"][level] == pytest.approx(np.mean([o["distance"][level] for o in one]), rel=1e-5)


def test_unlabelled_report_table_and_pick():
    rows = {"source_only": {"label_free": -0.9}, "semi2i": {"label_free": -0.2}, "gray_world": {"label_free": -0.5},
            "cyclegan": {"not_applicable": "source has 3 band(s), target 1"}}
    report = {"source": "a", "target": "b", "classes": ["x", "y"], "profile": "quick", "methods": rows}
    assert label_free_pick(rows) == "semi2i"
    assert label_free_pick({**rows, "target_oracle": {"label_free": 0.0}}) == "semi2i"  # the oracle saw labels
    table = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1]
             for line in report_markdown(report).splitlines() if line.startswith("| ") and "---" not in line}
    assert table == {"method": "label-free", "source_only": "-0.9000", "semi2i": "-0.2000", "gray_world": "-0.5000",
                     "cyclegan": "not applicable"}


def test_the_pick_says_whether_its_lead_over_the_runner_up_is_significant(tmp_path):
    """Three draws by hand: t = mean / (sd / sqrt 3) of the per-draw leads, and with 2 degrees of freedom the one-sided
    p = 1/2 - t / (2 sqrt(2 + t^2))."""
    run = types.SimpleNamespace(path=lambda *parts: tmp_path.joinpath(*parts))
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "gray_world.json").write_text(json.dumps({"maps_with": "source_unet"}))
    source, semi2i = [-1.0, -1.2, -0.8], [-0.2, -0.3, -0.1]
    free = {"source_only": {"draws": source}, "semi2i": {"draws": semi2i}, "colormapgan": {"draws": [-0.25, -0.2, -0.3]},
            "gray_world": {"draws": [-0.1, -0.1, -0.1]}, "target_oracle": {"draws": [0.0, 0.0, 0.0]}}
    rows = {"source_only": {"label_free": -1.0}, "semi2i": {"label_free": -0.2}, "colormapgan": {"label_free": -0.25},
            "gray_world": {"label_free": -1.0}, "target_oracle": {"label_free": 0.0}}
    # leads 0.05, -0.1, 0.2: mean 0.05, sd 0.15, t = 0.5774, p = 0.3110; gray world maps with the source U-net (its
    # draws are source-only's, whatever its set-aside fine-tune scored) and the oracle saw labels: neither is a rival
    evidence = pick_evidence(run, rows, free)
    assert evidence == {"method": "semi2i", "by": "label_free", "runner_up": "colormapgan", "lead": pytest.approx(0.05),
                        "p_value": pytest.approx(0.3110, abs=1e-4), "significant": False}
    line = report_markdown({"source": "a", "target": "b", "classes": [], "profile": "quick", "methods": rows,
                            "label_free_pick": evidence})
    assert "**semi2i**" in line and "over colormapgan, the runner-up, is **not** significant" in line and "p = 0.3110" in line
    # leads 0.3, 0.3, 0.6: mean 0.4, sd 0.1732, t = 4, p = 1/2 - 4 / (2 sqrt 18) = 0.0286
    free["colormapgan"]["draws"] = [-0.5, -0.6, -0.7]
    rows["colormapgan"]["label_free"] = -0.6
    assert pick_evidence(run, rows, free)["p_value"] == pytest.approx(0.0286, abs=1e-4)
    assert (evidence := pick_evidence(run, rows, free))["significant"] is True
    line = report_markdown({"source": "a", "target": "b", "classes": [], "profile": "quick", "methods": rows,
                            "label_free_pick": evidence})
    assert "over colormapgan, the runner-up, is significant" in line and "p = 0.0286" in line
    assert "can still get wrong between two methods that both adapted" in line  # agreeing draws are not a right order
    # every other method maps with the source U-net: the pick has no rival to be tested against
    only = {m: rows[m] for m in ("source_only", "gray_world")}
    assert pick_evidence(run, only, free) == {"method": "source_only", "by": "label_free", "runner_up": None, "lead": None, "p_value": None,
                                              "significant": None}


@pytest.mark.slow
@pytest.mark.ray
def test_adapt_on_an_unlabelled_target_reports_the_label_free_score_alone(tmp_path, ray_session):
    from semi2i.adapt_config import load_adapt_config
    from semi2i.demo.cities import make_demo_cities
    from semi2i.pipeline import AdaptRun

    files = make_demo_cities(tmp_path / "data", size=96, rasters_per_city=1, seed=2)
    classes = str(tmp_path / "data" / "classes.json")
    cfg = {"name": "nolabels", "classes": ["building", "road", "vegetation", "water", "land"], "profile": "quick",
           "methods": ["source_only", "histogram_matching", "gray_world"],
           "source": {"images": [str(p) for p in files["demo_source"].images],
                      "labels": [str(p) for p in files["demo_source"].labels], "classes": classes},
           "target": {"images": [str(p) for p in files["demo_target"].images]},
           "overrides": {"patch_size": 32, "overlap": 8, "semi2i": {"patch_size": 32}, "colormapgan": {"patch_size": 32},
                         "cyclegan": {"patch_size": 32},
                         "unet": {"base_width": 4, "depth": 2, "patch_size": 32, "batch_size": 2, "train_steps": 2, "finetune_steps": 2}}}
    path = tmp_path / "nolabels.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = AdaptRun(load_adapt_config(path), tmp_path / "run")
    report = run.run()

    assert list(report["methods"]) == cfg["methods"]
    source = report["methods"]["source_only"]["label_free"]
    for name, row in report["methods"].items():
        assert set(row) == {"label_free"} and np.isfinite(row["label_free"]) and row["label_free"] <= 0
        kept = json.loads((tmp_path / "run" / "label_free" / f"{name}.json").read_text())
        assert kept["label_free"] == -kept["distance"]["deep"]
        fell_back = name in report["finetune_guard"] and report["finetune_guard"][name]["weight_average"] is not None
        assert row["label_free"] == (source if fell_back else kept["label_free"])
    # the do-no-harm guard needs no target labels either: it decided both fine-tunes
    assert set(report["finetune_guard"]) == {"histogram_matching", "gray_world"}
    md = (tmp_path / "run" / "report.md").read_text()
    # the colour-blind reference needs no target labels: every method's map is measured, and the pick is by it
    assert set(report["reference_agreement"]) == set(cfg["methods"]) and report["label_free_pick"]["by"] == "reference_agreement"
    pick = label_free_pick(report["methods"], report["reference_agreement"])
    assert "The target has no labels" in md and f"**{pick}**" in md and "| method | label-free | reference agreement |" in md
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
