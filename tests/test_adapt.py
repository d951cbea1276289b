"""jobs/adapt.py end to end at a tiny size: every stage writes what the next reads, report.json
follows its contract, a re-run resumes (skips finished stages), bad configs fail before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image

from conftest import REPO, ran_off_the_driver
from semi2i.checkpoints import load_checkpoint
from semi2i.config import ConfigError
from semi2i.finetune_guard import SIGNIFICANCE, lead_p_value
from semi2i.adapt_config import load_adapt_config
from semi2i.metrics import scores
from semi2i.pipeline import AdaptRun
from semi2i.report_table import label_free_pick, pct

TINY = {
    "name": "tiny",
    "profile": "quick",
    "synthetic": {"size": 96, "rasters": 1, "seed": 2},
    "classes": ["building", "road", "vegetation", "water", "land"],
    "overrides": {
        "patch_size": 32,
        "overlap": 8,
        "semi2i": {"base_width": 4, "n_res_blocks": 1, "disc_width": 4, "patch_size": 32, "epochs": 2, "decay_epoch": 1,
                   "max_steps_per_epoch": 2, "checkpoint_every": 2, "log_every": 1},
        "unet": {"base_width": 4, "depth": 2, "patch_size": 32, "batch_size": 2, "train_steps": 3, "finetune_steps": 2},
        "colormapgan": {"disc_width": 4, "patch_size": 32, "epochs": 2, "decay_epoch": 1, "max_steps_per_epoch": 2,
                        "checkpoint_every": 2, "log_every": 1},
        "cyclegan": {"base_width": 4, "n_res_blocks": 1, "disc_width": 4, "patch_size": 32, "epochs": 2, "decay_epoch": 1,
                     "max_steps_per_epoch": 2, "checkpoint_every": 2, "log_every": 1},
    },
}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory, ray_session):
    """The tiny demo run once for this module: its folder, run, report and config (the K-seed test starts
    from it with --reuse-from instead of training the same baselines again)."""
    folder = tmp_path_factory.mktemp("tiny_demo")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = AdaptRun(load_adapt_config(config), folder / "run")
    return folder, run, run.run(), config


@pytest.mark.slow
@pytest.mark.ray
def test_tiny_demo_end_to_end_and_resume(tiny_demo):
    tmp_path, run, report, config = tiny_demo

    assert set(report) >= {"source", "target", "classes", "profile", "methods"}
    assert report["profile"] == "quick" and report["classes"] == TINY["classes"]
    assert list(report["methods"]) == ["source_only", "histogram_matching", "gray_world", "colormapgan", "cyclegan", "semi2i",
                                       "target_oracle"]
    for name, m in report["methods"].items():
        assert set(m) >= {"iou", "miou", "pixel_accuracy"} and set(m["iou"]) == set(TINY["classes"])
        assert 0 <= m["pixel_accuracy"] <= 100 and (m["miou"] is None or 0 <= m["miou"] <= 100)
    assert "upper bound" in report["methods"]["target_oracle"]["note"]
    # every method, source-only included, carries its label-free score, as kept in label_free/<method>.json (a
    # method mapped with the source U-net, below, has the source U-net's)
    source_score = report["methods"]["source_only"]["label_free"]
    for name, m in report["methods"].items():
        kept = json.loads((tmp_path / "run" / "label_free" / f"{name}.json").read_text())
        fell_back = (report["finetune_guard"].get(name) or {}).get("weight_average") is not None
        assert kept["label_free"] == -kept["distance"]["deep"] and m["label_free"] <= 0
        assert m["label_free"] == (source_score if fell_back else kept["label_free"])
    # the do-no-harm guard (the quick profile's unet.finetune_guard: source_unet) decided each fine-tune on the two
    # label-free scores; a method that fell back maps with the source U-net (its fine-tune kept in guard/)
    source_unet = load_checkpoint(tmp_path / "run" / "unet_source.pt")["model"]
    assert set(report["finetune_guard"]) == set(report["methods"]) - {"source_only", "target_oracle"}
    for name, decision in report["finetune_guard"].items():
        assert decision["label_free_source_only"] == report["methods"]["source_only"]["label_free"]
        # averaged unless the fine-tune's lead over the five draws is significant (a paired t-test)
        assert decision["draws_source_only"] == json.loads((tmp_path / "run" / "label_free" / "source_only.json").read_text())["draws"]
        p_value = lead_p_value(decision["draws_fine_tuned"], decision["draws_source_only"])
        assert decision["p_value"] == round(p_value, 4) and len(decision["draws_fine_tuned"]) == 5
        # at 5 % over the run's fine-tunes (Bonferroni): every method but the source U-net and the oracle
        assert decision["family"] == len(report["finetune_guard"]) and decision["significance"] == SIGNIFICANCE / decision["family"]
        needed = decision["significance"]
        assert decision["label_free_fine_tuned"] <= 0 and (decision["maps_with"] == "source_unet") == (p_value >= needed)
        assert decision["maps_with"] in ("source_unet", "fine_tune") and decision["weight_average"] == (0.0 if p_value >= needed else None)
        assert decision["label_free_fine_tuned"] == pytest.approx(np.mean(decision["draws_fine_tuned"]), rel=1e-5, abs=1e-6)
        kept = tmp_path / "run" / "guard" / f"unet_{name}.pt"
        assert kept.exists() == (decision["weight_average"] is not None)
        # the method's label-free file scores its fine-tune, averaged or not (semi2i.label_free.scored_unet)
        scored = json.loads((tmp_path / "run" / "label_free" / f"{name}.json").read_text())
        assert scored["label_free"] == pytest.approx(decision["label_free_fine_tuned"], abs=1e-6)
        assert scored["checkpoint"] == str(kept if kept.exists() else tmp_path / "run" / f"unet_{name}.pt")
        if kept.exists():
            published, fine_tuned = load_checkpoint(tmp_path / "run" / f"unet_{name}.pt")["model"], load_checkpoint(kept)["model"]
            assert all(torch.equal(published[k], source_unet[k]) for k in published if published[k].is_floating_point())
            assert any(not torch.equal(fine_tuned[k], source_unet[k]) for k in fine_tuned if fine_tuned[k].is_floating_point())
            # so it maps as source-only does, pixel for pixel
            assert report["methods"][name]["iou"] == report["methods"]["source_only"]["iou"]
    # the pick and how sure the score is of it: the runner-up maps with another U-net than the pick's
    # (since 2026-12-07 by the maps' agreement with the colour-blind reference, the quick profile's unet.reference_steps)
    pick, agreement = report["label_free_pick"], report["reference_agreement"]
    kept = json.loads((tmp_path / "run" / "reference" / "agreement.json").read_text())
    assert set(agreement) == set(report["methods"]) and kept["steps"] == 400 and kept["seed"] == 0
    for name, value in agreement.items():
        assert value == kept["methods"][name]["agreement"] and 0 <= value <= 100
    assert load_checkpoint(tmp_path / "run" / "reference" / "unet.pt")["steps"] == 400
    on_source = {m for m, d in report["finetune_guard"].items() if d["maps_with"] == "source_unet"} | {"source_only"}
    assert len({agreement[m] for m in on_source}) == 1  # one map, one agreement
    assert pick["by"] == "reference_agreement" and pick["method"] == label_free_pick(report["methods"], agreement)
    assert pick["method"] == max((m for m in agreement if m != "target_oracle"), key=agreement.get)
    if pick["runner_up"] is not None:
        assert not {pick["method"], pick["runner_up"]} <= on_source and pick["p_value"] is None
        assert pick["lead"] == round(agreement[pick["method"]] - agreement[pick["runner_up"]], 4) > 0
    # every stylized source carries its tone check; per-band baselines are monotone maps of the source
    for name in ("histogram_matching", "gray_world", "colormapgan", "cyclegan", "semi2i"):
        assert -1 <= report["methods"][name]["tone_order"] <= 1
    assert report["methods"]["gray_world"]["tone_order"] > 0.99 and "tone_order" not in report["methods"]["source_only"]
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
    # the report's numbers are the scores files', which are the scores of their confusion matrices
    for name, m in report["methods"].items():
        score = json.loads((tmp_path / "run" / "scores" / f"{name}.json").read_text())
        assert {k: score[k] for k in ("iou", "miou", "pixel_accuracy")} == {k: m[k] for k in ("iou", "miou", "pixel_accuracy")}
        assert scores(np.array(score["confusion_matrix"]), TINY["classes"]) == {k: m[k] for k in ("iou", "miou", "pixel_accuracy")}
    # report.md's table rows are report.json's numbers, two decimals
    rows = {line.split(" | ")[0].strip("| ").removesuffix(" (upper bound)"): line.strip("| ").split(" | ")[1:]
            for line in (tmp_path / "run" / "report.md").read_text().splitlines() if line.startswith("| ") and "---" not in line}
    for name, m in report["methods"].items():
        wanted = [*(pct(m["iou"][c]) for c in TINY["classes"]), f"**{pct(m['miou'])}**", pct(m["pixel_accuracy"]),
                  f"{m['label_free']:.4f}", pct(report["reference_agreement"][name])]
        assert rows[name] == wanted, (name, rows[name], wanted)
    # the source U-net's fit on its own city (semi2i.source_fit): a 3-step U-net leaves classes unlearned, so the
    # quick profile's two retrains ran (seeds 1000, 2000) and the best attempt is what every method started from
    fit = report["source_fit"]
    assert fit == json.loads((tmp_path / "run" / "source_fit.json").read_text())
    assert [a["seed"] for a in fit["attempts"]] == [0, 1000, 2000][:len(fit["attempts"])]
    assert len(fit["attempts"]) == 3 or not fit["attempts"][-1]["unlearned"]
    assert fit["attempts"][fit["chosen"]] == {k: v for k, v in fit.items() if k not in ("chosen", "attempts", "rule")}
    assert (tmp_path / "run" / "unet_source.pt").read_bytes() == \
        (tmp_path / "run" / "source_fit" / f"unet_source_try{fit['chosen']}.pt").read_bytes()
    assert "Source U-net on its own city (source labels)" in (tmp_path / "run" / "report.md").read_text()
    # the preview: six panels (source, stylized source, target, ground truth, two predictions) and a legend
    assert Image.open(tmp_path / "run" / "previews" / "adaptation.png").size == (6 * 256, 256 + 18 + 22)

    # the pixel work ran on the cluster's worker node, none of it in this driver or on the zero-CPU head
    places = json.loads((tmp_path / "run" / "placement.json").read_text())
    assert places["driver"]["pid"] == os.getpid()
    assert set(places["stages"]) == {"ingest", "stylize", "tone_check", "map", "publish", "score", "label_free",
                                     "finetune_guard", "previews", "source_fit", "reference"}
    assert ran_off_the_driver(places["stages"]) == []
    # SemI2I's chain ran beside the other methods' (semi2i.lanes: the test cluster has room for both)
    # and each lane scored its methods last (the oracle's score too, which no fine-tune's guard computes)
    assert {"lanes", "training/semi2i", "segment/semi2i", "training/others", "segment/others", "label_free/semi2i",
            "label_free/others"} <= set(run.timings)

    # each stage wrote what the next read: stylized stores carry the source labels, maps are georeferenced
    stylized = tmp_path / "run" / "stylized" / "semi2i" / "images"
    src = run.store("source")
    with rasterio.open(next(stylized.glob("*.tif"))) as f:
        assert f.crs == src.rasters[0].crs and f.transform == src.rasters[0].transform
    target = run.store("target")
    with rasterio.open(tmp_path / "run" / "maps" / "semi2i" / "cog" / f"{target.rasters[0].id}.tif") as f:
        assert f.crs == target.rasters[0].crs and f.transform == target.rasters[0].transform and f.nodata == 255

    # resume: a second run finds every output and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in [*(tmp_path / "run").glob("*.pt"), *(tmp_path / "run" / "reference").glob("*")]}
    again = AdaptRun(load_adapt_config(config), tmp_path / "run")
    assert again.run() == report
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again.timings["unet_source"] < 1.0 and again.timings["semi2i"] < 1.0

    # studies/study_style.py reads a finished run folder; with no fine-tune steps the style mode cannot
    # matter, so every mode must score exactly what the source U-net scores
    spec = importlib.util.spec_from_file_location("study_style", REPO / "studies" / "study_style.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    untouched = {mode: study.main([str(tmp_path / "run"), "--mode", mode, "--steps", "0", "--eval-patches", "4"])["miou"]
                 for mode in ("global", "patch", "real")}
    assert len(set(untouched.values())) == 1 and 0 <= untouched["real"] <= 100
    tuned = study.main([str(tmp_path / "run"), "--mode", "patch", "--steps", "2", "--eval-patches", "4"])
    assert set(tuned["iou"]) == set(TINY["classes"]) and tuned["fine_tune_s"] >= 0


@pytest.mark.slow
@pytest.mark.ray
def test_several_semi2i_seeds_are_trained_scored_and_one_is_chosen_without_labels(tmp_path, tiny_demo):
    cfg = {**TINY, "methods": ["source_only", "histogram_matching", "semi2i", "target_oracle"],
           "overrides": {**TINY["overrides"], "semi2i": {**TINY["overrides"]["semi2i"], "seeds": 2}}}
    config = tmp_path / "seeds.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = AdaptRun(load_adapt_config(config), tmp_path / "run")
    run.reuse(tiny_demo[0] / "run")  # only the seeds train: the baselines are the tiny demo's
    report = run.run()
    # --reuse-from with other SemI2I settings: the other models are the tiny demo's files, their rows its rows
    demo_run, demo_report = tiny_demo[1], tiny_demo[2]
    assert run.path("unet_source.pt").stat().st_ino == demo_run.path("unet_source.pt").stat().st_ino
    assert {m: report["methods"][m] for m in ("source_only", "histogram_matching", "target_oracle")} == \
        {m: demo_report["methods"][m] for m in ("source_only", "histogram_matching", "target_oracle")}
    # and so are the fine-tune guard's decisions on them, decided once with the U-net they decided on; the test is
    # this run's (Bonferroni over its 3 fine-tunes, not the demo's 5), taken again from the p-value on record
    ours, theirs = report["finetune_guard"]["histogram_matching"], demo_report["finetune_guard"]["histogram_matching"]
    assert (ours["family"], theirs["family"]) == (3, 5) and ours["significance"] == SIGNIFICANCE / 3
    decided = lambda record: {k: v for k, v in record.items() if k not in ("family", "significance", "rule")}
    assert decided(ours) == decided(theirs)
    assert run.path("unet_histogram_matching.pt").stat().st_ino == demo_run.path("unet_histogram_matching.pt").stat().st_ino
    assert json.loads(demo_run.path("guard", "histogram_matching.json").read_text()) == theirs  # the demo's, untouched

    assert list(report["methods"]) == ["source_only", "histogram_matching", "semi2i", "semi2i_seed0", "semi2i_seed1",
                                       "target_oracle"]
    choice = report["semi2i_choice"]
    chosen = choice["chosen"]
    assert chosen in ("semi2i_seed0", "semi2i_seed1") and choice["seed"] == (0 if chosen.endswith("0") else 1000)
    kept = [m for m in ("semi2i_seed0", "semi2i_seed1") if m not in choice["rejected_inverted"]]
    if len(kept) == 2:  # two seeds agree with each other alike: the medoid cannot separate them, k = 0 is kept
        assert choice["agreement"]["semi2i_seed0"] == choice["agreement"]["semi2i_seed1"] and chosen == "semi2i_seed0"
    # the agreement is the two maps' mIoU, one against the other, recomputed here from the published maps
    from semi2i.mapping import read_classes
    from semi2i.selection import agreement_from_confusion, confusion

    target = run.store("target")
    cm = sum(confusion(read_classes(run.path("maps", "semi2i_seed0"), r.id), read_classes(run.path("maps", "semi2i_seed1"), r.id),
                       target.num_classes) for r in target.rasters)
    if len(kept) == 2:
        assert choice["agreement"]["semi2i_seed0"] == pytest.approx(agreement_from_confusion(cm), abs=1e-4)
    # the chosen seed is what "semi2i" means everywhere: same row, same files
    assert {k: v for k, v in report["methods"]["semi2i"].items()} == report["methods"][chosen]
    for alias, original in (("semi2i.pt", f"{chosen}.pt"), ("unet_semi2i.pt", f"unet_{chosen}.pt")):
        assert run.path(alias).stat().st_ino == run.path(original).stat().st_ino
    assert (run.path("maps", "semi2i", "maps.zarr")).is_dir() and run.path("stylized", "semi2i", "store.zarr").is_dir()
    # the two seeds are two different generators, and a re-run trains nothing and keeps the choice
    assert run.path("semi2i_seed0.pt").read_bytes() != run.path("semi2i_seed1.pt").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in run.run_dir.glob("*.pt")}
    assert AdaptRun(load_adapt_config(config), tmp_path / "run").run() == report
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_bad_config_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"source": {"images": "nothing/*.tif"}, "target": {}, "classes": [], "colour": 1,
                                   "overrides": {"semi2i": {"lr": "fast"}}}))
    with pytest.raises(ConfigError) as err:
        load_adapt_config(bad)
    text = str(err.value)
    for expected in ("unknown key 'colour'", "'source.labels' is required", "'target.images' is required",
                     "'classes' must be a non-empty list", "semi2i.lr"):
        assert expected in text, text
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "adapt.py"), "--config", str(bad), "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown key 'colour'" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_shipped_configs_validate(shared_data):
    for name in ("demo", "dubai-bright-to-sensor", "dubai-sensor-to-bright", "dubai-bright-to-dark", "dubai-dark-to-bright",
                 "dubai-dark-to-sensor", "dubai-sensor-to-dark"):
        cfg = load_adapt_config(REPO / "jobs" / "configs" / f"{name}.yaml")
        assert cfg.name == name and cfg.classes == ["building", "road", "vegetation", "water", "land"]


def test_built_in_demo_is_the_shipped_demo_config():
    shipped, built_in = load_adapt_config(REPO / "jobs" / "configs" / "demo.yaml"), load_adapt_config(None)
    assert built_in.name == shipped.name == "demo"
    assert built_in.methods == shipped.methods and "cyclegan" not in built_in.methods
    assert built_in.profile == shipped.profile and built_in.profile.unet.train_steps == 200


def test_segment_stage_maps_in_the_unets_arithmetic(tmp_path, monkeypatch):
    """unet.precision and unet.tf32 reach the target mapping: a bf16 profile maps in bf16 too."""
    import dataclasses
    import types

    import semi2i.mapping
    import semi2i.pipeline
    from semi2i.config import load_profile

    calls = []
    monkeypatch.setattr(semi2i.mapping, "map_region", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(semi2i.pipeline, "score_maps", lambda target, maps: {"miou": 0.5})
    quick = load_profile("quick")
    for precision, tf32 in (("fp32", False), ("bf16", True)):
        profile = dataclasses.replace(quick, unet=dataclasses.replace(quick.unet, precision=precision, tf32=tf32))
        run_dir = tmp_path / precision
        run = types.SimpleNamespace(cfg=types.SimpleNamespace(profile=profile, workers=1, gpu=False),
                                    store=lambda name: types.SimpleNamespace(path=tmp_path / "target.zarr"),
                                    _available_methods=lambda: ["semi2i"], not_applicable=lambda method: None,
                                    path=run_dir.joinpath, unet_path=lambda method: tmp_path / f"unet_{method}.pt")
        AdaptRun.stage_segment(run)
        assert (calls[-1]["precision"], calls[-1]["tf32"]) == (precision, tf32)
        assert json.loads((run_dir / "scores" / "semi2i.json").read_text())["miou"] == 0.5
    assert len(calls) == 2


def test_run_dir_default_and_ephemeral_copy_refused(tmp_path, monkeypatch):
    from pathlib import Path

    from semi2i.cli import adapt

    monkeypatch.setenv("SEMI2I_RUNS", str(tmp_path / "shared"))
    assert adapt.default_run_dir("demo") == tmp_path / "shared" / "demo"
    monkeypatch.delenv("SEMI2I_RUNS")
    assert adapt.default_run_dir("demo") == Path("runs") / "demo"
    adapt.refuse_ephemeral(tmp_path / "runs" / "demo")  # an ordinary folder is fine
    with pytest.raises(ConfigError, match="temporary copy of the working dir"):
        adapt.refuse_ephemeral(tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1" / "runs" / "demo")


def test_relative_config_paths_resolve_from_the_checkout_else_the_current_folder(tmp_path, monkeypatch):
    from semi2i import adapt_config

    monkeypatch.chdir(tmp_path)
    assert adapt_config.config_root() == REPO  # a source checkout (pip install -e .)
    assert adapt_config.resolve("../shared/data/x.tif") == (REPO / ".." / "shared" / "data" / "x.tif").resolve()
    monkeypatch.setattr(adapt_config, "REPO_ROOT", tmp_path / "site-packages")  # installed without a checkout
    assert adapt_config.config_root() == tmp_path
    assert adapt_config.resolve("data/x.tif") == tmp_path / "data" / "x.tif"
    assert adapt_config.resolve("s3://bucket/x.tif") == "s3://bucket/x.tif"
