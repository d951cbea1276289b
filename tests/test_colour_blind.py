"""The colour-blind reference (semi2i.colour_blind) and the pick it makes (report_table, adapt_report)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from semi2i.adapt_report import pick_evidence
from semi2i.colour_blind import agreements, map_miou, map_stamp, measure, random_mixing, reference_maps, standardise
from semi2i.data.ingest import ingest_city
from semi2i.demo.cities import make_city_pair
from semi2i.report_table import label_free_pick, report_markdown

UNET = {"patch_size": 32, "base_width": 8, "depth": 2, "batch_size": 4, "lr": 1e-2}
CLASSES = ["building", "road", "vegetation", "water", "land"]


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 6])
def test_the_mixing_is_a_rotation_that_keeps_the_grey_axis(bands):
    rng = np.random.default_rng(bands)
    for _ in range(5):
        m = random_mixing(bands, rng)
        assert np.allclose(m @ m.T, np.eye(bands), atol=1e-10)  # orthogonal: no gain, no loss of contrast
        if bands > 1:
            assert np.allclose(m @ np.ones(bands), np.ones(bands))  # grey stays grey: brightness is kept
    if bands >= 3:  # and it does move colours: a pure red pixel leaves the red band
        assert not np.allclose(random_mixing(bands, rng) @ np.eye(bands)[0], np.eye(bands)[0])
        free = random_mixing(bands, rng, keep_grey=False)
        assert np.allclose(free @ free.T, np.eye(bands)) and not np.allclose(free @ np.ones(bands), np.ones(bands))


def test_standardise_leaves_each_image_band_at_mean_0_std_1():
    x = torch.randn(2, 3, 8, 8) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 7
    y = standardise(x)
    assert torch.allclose(y.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3)), torch.ones(2, 3), atol=1e-5)


def test_map_miou_by_hand():
    a = np.array([0, 0, 1, 1, 255], np.uint8)
    b = np.array([0, 1, 1, 1, 0], np.uint8)
    # class 0: 1 in both, 2 in either (the pixel 255 in a is left out); class 1: 2 of 3: (1/2 + 2/3) / 2
    assert map_miou(a, b, 2) == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert map_miou(b, b, 2) == 100.0 and map_miou(a, b, 2) == map_miou(b, a, 2)


def test_the_pick_is_the_map_that_agrees_best_and_says_by_how_much():
    rows = {"source_only": {"label_free": -1.0, "miou": 5.0}, "histogram_matching": {"label_free": -0.1, "miou": 20.0},
            "gray_world": {"label_free": -1.0, "miou": 5.0}, "semi2i": {"label_free": -0.3, "miou": 70.0},
            "cyclegan": {"not_applicable": "no"}, "target_oracle": {"label_free": 0.0, "miou": 90.0}}
    agreement = {"source_only": 10.0, "histogram_matching": 25.0, "gray_world": 10.0, "semi2i": 41.5, "target_oracle": 60.0}
    assert label_free_pick(rows) == "histogram_matching"  # the score alone: the swap it cannot see
    assert label_free_pick(rows, agreement) == "semi2i"  # the oracle saw labels: never the pick
    evidence = pick_evidence(None, rows, {}, agreement)
    assert evidence == {"method": "semi2i", "by": "reference_agreement", "runner_up": "histogram_matching", "lead": 16.5,
                        "p_value": None, "significant": None}
    # methods mapped with the source U-net share source-only's map: a tie goes to source-only, and no rival is left
    same = {m: 10.0 for m in ("source_only", "gray_world")}
    assert pick_evidence(None, rows, {}, same) == {"method": "source_only", "by": "reference_agreement", "runner_up": None,
                                                  "lead": None, "p_value": None, "significant": None}
    report = {"source": "a", "target": "b", "classes": ["x"], "profile": "quick", "methods": {
        m: {**r, "iou": {"x": r.get("miou")}, "pixel_accuracy": 50.0} for m, r in rows.items()},
        "reference_agreement": agreement, "label_free_pick": evidence}
    text = report_markdown(report)
    table = {line.split(" | ")[0].strip("| ").removesuffix(" (upper bound)"): line.strip("| ").split(" | ")
             for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert table["semi2i"][-1] == "41.50" and table["histogram_matching"][-1] == "25.00" and table["cyclegan"][-1] == "-"
    assert "trust **semi2i** (its map agrees best with the colour-blind reference map" in text
    assert "16.50 points more than histogram_matching, the runner-up" in text
    # without labels: the label-free score and the agreement side by side
    bare = {**report, "methods": {m: {"label_free": r["label_free"]} for m, r in rows.items() if "label_free" in r}}
    lines = [line for line in report_markdown(bare).splitlines() if line.startswith("| semi2i")]
    assert lines == ["| semi2i | -0.3000 | 41.50 |"]


def _pair(tmp_path, write):
    """A tiny demo pair: the source city through sensor A, the target city through sensor B (hue turned ~105°)."""
    pair = make_city_pair(128, seed=2)
    stores = {}
    for role, city in (("source", "demo_source"), ("target", "demo_target")):
        image, labels = pair[city]
        write(tmp_path / role / "img" / "a.tif", image)
        write(tmp_path / role / "lbl" / "a.tif", labels.astype(np.uint8))
        stores[role] = str(ingest_city(str(tmp_path / role / "img" / "*.tif"), tmp_path / f"{role}.zarr",
                                       labels=str(tmp_path / role / "lbl" / "*.tif"), classes=CLASSES, min_size=32,
                                       progress=False).path)
    return stores


def _published(folder, raster, classes, job):
    """A map folder as the mapping job leaves it: cog/<raster>.tif and job.json (written last)."""
    import rasterio

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cog").mkdir(exist_ok=True)
    with rasterio.open(folder / "cog" / f"{raster}.tif", "w", driver="GTiff", height=classes.shape[0],
                       width=classes.shape[1], count=1, dtype="uint8") as dst:
        dst.write(classes[None])
    (folder / "job.json").write_text(json.dumps(job))
    return folder


def test_measure_trains_once_maps_the_target_and_scores_each_map_against_it(tmp_path, write):
    from semi2i.checkpoints import load_checkpoint
    from semi2i.data.store import open_store

    stores = _pair(tmp_path, write)
    target = open_store(stores["target"])
    raster = target.rasters[0].id
    truth = target.read(raster, "label")
    reference = tmp_path / "reference" / "unet.pt"
    first = measure(reference, stores["target"], {}, stores["source"], UNET, 6, 0)
    state = load_checkpoint(reference)
    assert (state["steps"], state["seed"]) == (6, 0) and first == {"steps": 6, "seed": 0, "methods": {},
                                                                    "reference_miou": first["reference_miou"]}
    ref = reference_maps(state, stores["target"], 0)[raster]
    # the reference's own map agrees fully; the truth map agrees as much as the reference's mIoU on the labels
    maps = {"itself": str(_published(tmp_path / "maps" / "itself", raster, ref, {"n": 1})),
            "truth": str(_published(tmp_path / "maps" / "truth", raster, truth, {"n": 1}))}
    out = measure(reference, stores["target"], maps, stores["source"], UNET, 6, 0)
    assert out["methods"]["itself"]["agreement"] == 100.0
    assert out["methods"]["truth"]["agreement"] == out["reference_miou"] == first["reference_miou"]
    assert out["methods"]["truth"]["maps"] == map_stamp(tmp_path / "maps" / "truth")
    assert load_checkpoint(reference)["model"].keys() == state["model"].keys()
    stamp = reference.stat().st_mtime_ns
    measure(reference, stores["target"], {}, stores["source"], UNET, 6, 0)
    assert reference.stat().st_mtime_ns == stamp  # kept: not trained again
    measure(reference, stores["target"], {}, stores["source"], UNET, 7, 0)
    assert load_checkpoint(reference)["steps"] == 7  # other steps: trained again


def test_a_class_swap_costs_agreement_with_the_reference(tmp_path, write):
    """The premise, on a pair whose sensors differ in hue: a map with vegetation and water swapped (what a colour
    transfer that paints one in the other's colours teaches a fine-tune) agrees less with the reference than the right map."""
    from semi2i.data.store import open_store

    stores = _pair(tmp_path, write)
    target = open_store(stores["target"])
    raster = target.rasters[0].id
    truth = target.read(raster, "label")
    swapped = truth.copy()
    swapped[truth == 2], swapped[truth == 3] = 3, 2
    maps = {"right": str(_published(tmp_path / "maps" / "right", raster, truth, {})),
            "swapped": str(_published(tmp_path / "maps" / "swapped", raster, swapped, {}))}
    torch.set_num_threads(2)
    out = measure(tmp_path / "unet.pt", stores["target"], maps, stores["source"], UNET, 150, 0)
    assert out["methods"]["right"]["agreement"] > out["methods"]["swapped"]["agreement"] + 5


def test_agreements_reuse_a_measurement_until_the_map_or_the_reference_changes(tmp_path, write):
    stores = _pair(tmp_path, write)
    run_dir = tmp_path / "run"
    (run_dir / "stores").mkdir(parents=True)
    for role in ("source", "target"):
        (run_dir / "stores" / f"{role}.zarr").symlink_to(stores[role])
    from semi2i.data.store import open_store

    target = open_store(stores["target"])
    raster, truth = target.rasters[0].id, target.read(target.rasters[0].id, "label")
    _published(run_dir / "maps" / "semi2i", raster, truth, {"n": 1})
    _published(run_dir / "maps" / "gray_world", raster, np.zeros_like(truth), {"n": 1})

    def run(steps, seed=0):
        unet = types.SimpleNamespace(reference_steps=steps, **UNET)
        return types.SimpleNamespace(cfg=types.SimpleNamespace(seed=seed, gpu=False, profile=types.SimpleNamespace(unet=unet)),
                                     path=lambda *parts: run_dir.joinpath(*parts))

    assert agreements(run(0), ["semi2i"]) == {}  # no reference in this profile
    first = agreements(run(4), ["semi2i", "gray_world", "cyclegan"])  # cyclegan: no map, no agreement
    assert set(first) == {"semi2i", "gray_world"}
    kept = run_dir / "reference" / "agreement.json"
    stamp = kept.stat().st_mtime_ns
    assert agreements(run(4), ["semi2i", "gray_world"]) == first and kept.stat().st_mtime_ns == stamp
    # gray world mapped again (its job.json rewritten): measured again, semi2i's kept
    _published(run_dir / "maps" / "gray_world", raster, truth, {"n": 2})
    again = agreements(run(4), ["semi2i", "gray_world"])
    assert again["gray_world"] == again["semi2i"] == first["semi2i"]
    # another seed: another reference, everything measured against it
    assert json.loads(kept.read_text())["seed"] == 0
    agreements(run(4, seed=1), ["semi2i"])
    assert json.loads(kept.read_text())["seed"] == 1 and set(json.loads(kept.read_text())["methods"]) == {"semi2i"}
