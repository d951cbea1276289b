"""jobs/tune.py and semi2i.tuning: the proxy by hand, the resource rule, ASHA + resume on the real trial loop
(with a cheap rung), and a real tiny sweep on the synthetic demo cities through the command line."""

from __future__ import annotations

import copy
import csv
import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import yaml

from conftest import REPO, ran_off_the_driver
from test_adapt import TINY as ADAPT_TINY
from semi2i.config import ConfigError, Profile, load_profile
from semi2i.data.normalize import BandStats
from semi2i.adapt_config import load_adapt_config
from semi2i.tuning.proxy import structure_loss, style_distance
from semi2i.tuning.resources import ResourceError, TrialResources, plan_concurrency
from semi2i.tuning.rung import trial_semi2i_config
from semi2i.tuning.settings import load_sweep_config
from semi2i.tuning.sweep import make_sweep
from semi2i.tuning.tuner import initial_points, run_sweep


def _tiny() -> dict:
    """test_adapt's tiny demo config (96-px synthetic cities, tiny nets), as a 2-rung sweep."""
    data = copy.deepcopy(ADAPT_TINY)
    data["name"] = "tiny-sweep"
    data["overrides"]["semi2i"].update(preview_every=1000)
    for f in dataclasses.fields(Profile):  # any other model section must fit the 32-px patch grid too
        kind = f.default_factory
        if dataclasses.is_dataclass(kind) and "patch_size" in {g.name for g in dataclasses.fields(kind)}:
            data["overrides"].setdefault(f.name, {}).setdefault("patch_size", 32)
    data["tune"] = {"finetune_steps": 2, "grace_period": 1, "reduction_factor": 2, "max_failures": 0}
    return data


TINY = _tiny()
_QUICK = load_profile("quick").semi2i
#: the quick profile's own λ (the sweep's reference trial) with the tiny config's decay epoch
REFERENCE = {"lambda_cross": _QUICK.lambda_cross, "lambda_self": _QUICK.lambda_self, "lambda_grad": _QUICK.lambda_grad,
             "lambda_adv": _QUICK.lambda_adv, "decay_epoch": 1}


def _config(tmp_path, **tune) -> str:
    data = copy.deepcopy(TINY)
    data["tune"].update(tune)
    path = tmp_path / "tiny-sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------
# the proxy, by hand (no Ray)


def test_style_distance_is_the_shift_in_target_standard_deviations():
    rng = np.random.default_rng(0)
    target = BandStats.from_pixels(rng.normal(100.0, 4.0, size=(2, 20000)))
    shifted = BandStats(mean=target.mean + [2.0, 0.0], std=target.std, quantiles=target.quantiles + np.array([[2.0], [0.0]]))
    assert style_distance(target, target) == 0.0
    # band 1 shifted by 2 = 0.5 std, band 2 identical: mean over bands 0.25
    assert style_distance(shifted, target) == pytest.approx((2.0 / target.std[0] + 0.0) / 2, rel=1e-6)
    assert style_distance(shifted, target) == pytest.approx(0.25, rel=0.02)


def test_structure_loss_keeps_recolourings_and_flags_lost_structure_and_inversion():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:48, 0:48]
    blocks = ((y // 8 + x // 12) % 3).astype(np.float64)  # edges of a "city" of blocks
    source = np.stack([blocks * 40 + 50, blocks * 20 + 90, 200 - blocks * 30]) + rng.normal(0, 1, (3, 48, 48))
    stats = lambda img: BandStats.from_pixels(img.reshape(img.shape[0], -1))  # noqa: E731

    recoloured = 2.0 * source + 500.0  # brighter, more contrast: every edge kept with its direction
    loss, n = structure_loss(source, recoloured, stats(source), stats(recoloured))
    assert loss == pytest.approx(0.0, abs=1e-9) and n == 47 * 47
    inverted = 255.0 - source  # the tone inversion SemI2I showed at λ3 = 10: edges kept, signs flipped
    assert structure_loss(source, inverted, stats(source), stats(inverted))[0] == pytest.approx(2.0, abs=1e-9)
    noise = rng.normal(100, 30, source.shape)
    assert structure_loss(source, noise, stats(source), stats(noise))[0] > 0.8
    flat = np.full((1, 48, 48), 7.0)  # a different band count is fine (band means of z-scores)
    assert structure_loss(source, flat, stats(source), stats(flat))[0] == 1.0
    # invalid pixels do not count
    valid = np.ones((48, 48), bool)
    valid[:, :24] = False
    assert structure_loss(source, recoloured, stats(source), stats(recoloured), valid)[1] == 47 * 23


# ---------------------------------------------------------------------------------------------------
# configuration and resources


def test_tune_section_is_validated_with_the_adapt_config(tmp_path):
    cfg, settings = load_sweep_config(_config(tmp_path), tune_overrides={"num_samples": 3})
    assert cfg.name == "tiny-sweep" and settings.num_samples == 3 and settings.space["decay_epoch"] == [0, 2]
    points = initial_points(make_sweep(cfg, settings, tmp_path / "r", cluster={"CPU": 2}))
    assert points == [REFERENCE]  # the profile's own values are the first (reference) trial
    base = cfg.profile.semi2i
    trial = trial_semi2i_config(base, {"lambda_tone": 2.5, "decay_epoch": 1}, seed=3)
    assert (trial.lambda_tone, trial.decay_epoch, trial.seed, trial.lambdas) == (2.5, 1, 3, base.lambdas)
    unlabelled = make_sweep(cfg, settings, tmp_path / "r", labelled=False, cluster={"CPU": 2})
    assert (unlabelled.metric, unlabelled.mode) == ("label_free", "max")  # auto without labels: the label-free score
    proxy = make_sweep(cfg, dataclasses.replace(settings, metric="proxy"), tmp_path / "r", labelled=False, cluster={"CPU": 2})
    assert (proxy.metric, proxy.mode) == ("proxy", "min")
    with pytest.raises(ConfigError, match="needs target labels"):
        make_sweep(cfg, dataclasses.replace(settings, metric="miou"), tmp_path / "r", labelled=False, cluster={"CPU": 2})

    bad = copy.deepcopy(TINY)
    bad["tune"] = {"num_samples": 0, "colour": 1, "space": {"lambda_adv": [0, 1], "decay_epoch": [-1, 1], "lr": [1, 2]}}
    bad["colour"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        load_sweep_config(path)
    text = str(err.value)
    for expected in ("unknown key 'colour'", "'tune.colour'", "'tune.num_samples'", "tune.space.lambda_adv",
                     "tune.space.decay_epoch", "tune.space.lr"):
        assert expected in text, text


def test_shipped_sweep_configs_validate(shared_data):
    for name, samples in (("tune-demo", 8), ("tune-dubai-bright-to-sensor", 16), ("dubai-bright-to-sensor", 8)):
        cfg, settings = load_sweep_config(REPO / "jobs" / "configs" / f"{name}.yaml")
        assert cfg.name == name and settings.num_samples == samples


def test_trials_must_fit_the_cluster_or_fail_fast():
    cpu2 = {"CPU": 2.0}
    assert plan_concurrency(TrialResources(1, 1, False), cpu2) == 1  # driver 1 + worker 1 fills 2 CPUs
    assert plan_concurrency(TrialResources(0, 1, False), cpu2) == 2
    assert plan_concurrency(TrialResources(0.5, 1, False), {"CPU": 4}) == 2
    assert plan_concurrency(TrialResources(1, 2, True), {"CPU": 16, "GPU": 4}) == 2
    with pytest.raises(ResourceError, match="one trial needs 2.01 CPU"):
        plan_concurrency(TrialResources(0.01, 2, False), cpu2)  # the deadlock seen on 2 cores
    with pytest.raises(ResourceError, match="at most 1 fit at once"):
        plan_concurrency(TrialResources(1, 1, False), cpu2, requested=2)
    with pytest.raises(ResourceError, match="2 GPU"):
        plan_concurrency(TrialResources(1, 2, True), {"CPU": 16, "GPU": 1})


def test_only_the_last_rung_keeps_its_bulky_outputs(tmp_path):
    from semi2i.tuning.rung import _prune

    for rung in (1, 2):
        for name in ("stylized/images", "maps/maps.zarr"):
            (tmp_path / f"rung{rung}" / name).mkdir(parents=True)
        for name in ("unet.pt", "metrics.json"):
            (tmp_path / f"rung{rung}" / name).write_text("x")
        (tmp_path / "ray" / f"finetune_rung{rung}").mkdir(parents=True)
    _prune(tmp_path, 2)
    assert sorted(p.name for p in (tmp_path / "rung1").iterdir()) == ["metrics.json"]
    assert len(list((tmp_path / "rung2").iterdir())) == 4 and [p.name for p in (tmp_path / "ray").iterdir()] == ["finetune_rung2"]


#: results.md header -> results.csv column, written out here independently of tuning.outputs.RESULT_COLUMNS
MD_TO_CSV = {"rank": "rank", "trial": "trial", "status": "status", "rungs": "rungs", "λ1 cross": "lambda_cross",
             "λ2 self": "lambda_self", "λ3 grad": "lambda_grad", "λ4 adv": "lambda_adv", "λ5 tone": "lambda_tone",
             "decay epoch": "decay_epoch", "mIoU": "miou", "label-free": "label_free", "proxy": "proxy", "style": "style_distance",
             "structure": "structure_loss"}


def _markdown_table(text: str) -> list[dict]:
    """The rows of the one table in results.md, as {header: cell}; fails on a row that has more or fewer cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    assert set(lines[1]) <= set("|-") and lines[1].count("|") == len(header) + 1
    rows = [split(line) for line in lines[2:]]
    assert all(len(r) == len(header) for r in rows), (header, rows)
    return [dict(zip(header, r)) for r in rows]


def test_results_md_cells_match_results_csv_under_every_header(tmp_path):
    from semi2i.tuning.outputs import write_outputs

    cfg, settings = load_sweep_config(_config(tmp_path))
    sweep = make_sweep(cfg, settings, tmp_path / "sweep", cluster={"CPU": 2})  # no Ray
    # every column holds values no other column has, so a shifted column cannot match by chance
    rows = [{"trial": "t_a", "status": "completed", "rungs": 2, "lambda_cross": 11.5, "lambda_self": 22.5,
             "lambda_grad": 33.5, "lambda_adv": 0.445, "lambda_tone": 5.55, "decay_epoch": 1, "miou": 61.25,
             "label_free": -0.0425, "proxy": 0.775, "style_distance": 0.125, "structure_loss": 0.65, "error": ""},
            {"trial": "t_b", "status": "stopped early", "rungs": 1, "lambda_cross": 12.5, "lambda_self": 23.5,
             "lambda_grad": 34.5, "lambda_adv": 0.335, "lambda_tone": 6.25, "decay_epoch": 0, "miou": 41.75,
             "label_free": -0.0875, "proxy": 1.875, "style_distance": 0.375, "structure_loss": 1.5, "error": ""},
            {"trial": "t_c", "status": "error", "rungs": 0, "lambda_cross": 13.5, "lambda_self": 24.5,
             "lambda_grad": 35.5, "lambda_adv": 0.225, "lambda_tone": None, "decay_epoch": 2, "miou": None,
             "label_free": None, "proxy": None, "style_distance": None, "structure_loss": None, "error": "RuntimeError: boom"}]
    # rungs where the label-free score ranks like the mIoU and the proxy half does: ρ 1 and 0.5, by hand
    rungs = [{"trial": "t_a", "rung": 1, "miou": 10.0, "label_free": -3.0, "proxy": 3.0},
             {"trial": "t_a", "rung": 2, "miou": 20.0, "label_free": -2.0, "proxy": 1.0},
             {"trial": "t_b", "rung": 1, "miou": 30.0, "label_free": -1.0, "proxy": 2.0}]
    summary = write_outputs(sweep, rows, rungs)
    assert summary["label_free_tracking"] == {"spearman": pytest.approx(1.0), "points": 3}
    assert summary["proxy_tracking"] == {"spearman": pytest.approx(0.5), "points": 3}
    text = (sweep.run_dir / "results.md").read_text()
    assert "ρ(mIoU, label-free) = 1.00" in text and "ρ(mIoU, −proxy) = 0.50" in text
    assert [float(r["label_free"]) for r in _csv(sweep.run_dir / "rungs.csv")] == [-3.0, -2.0, -1.0]
    csv_rows = _csv(sweep.run_dir / "results.csv")
    md_rows = _markdown_table((sweep.run_dir / "results.md").read_text())
    assert len(md_rows) == len(csv_rows) == 3
    assert list(md_rows[0]) == list(MD_TO_CSV)  # every column, λ5 included, in the csv's order
    assert md_rows[0]["trial"] == "t_a **(best)**"
    for md, row in zip(md_rows, csv_rows):
        for label, key in MD_TO_CSV.items():
            cell, value = md[label].replace(" **(best)**", ""), row[key]
            if value == "":
                assert cell == "n/a", (label, cell)
            elif key in ("trial", "status"):
                assert cell == value, (label, cell, value)
            else:
                assert float(cell) == pytest.approx(float(value), rel=1e-3), (label, cell, value)
    assert [r["lambda_tone"] for r in csv_rows] == ["5.55", "6.25", ""] and [r["miou"] for r in csv_rows][:2] == ["61.25", "41.75"]


def test_the_sweep_says_how_well_the_label_free_score_ranks_its_trials_as_well_as_its_rungs(tmp_path):
    """Rungs steer ASHA; the trials' last reports are what the user picks from: both are measured, apart."""
    from semi2i.tuning.outputs import write_outputs

    cfg, settings = load_sweep_config(_config(tmp_path))
    sweep = make_sweep(cfg, settings, tmp_path / "sweep", cluster={"CPU": 2})  # no Ray
    trial = lambda name, miou, label_free, proxy: {"trial": name, "status": "completed", "rungs": 2,  # noqa: E731
                                                   "miou": miou, "label_free": label_free, "proxy": proxy, "error": ""}
    # mIoU ranks a > b > c > d; label-free ranks a > c > b > d (ranks 4 2 3 1 against 4 3 2 1: Σd² = 2,
    # ρ = 1 − 6·2 / (4·15) = 0.8); −proxy ranks exactly like the mIoU (ρ 1); the errored trial has no scores
    rows = [trial("a", 60.0, -1.0, 1.0), trial("b", 50.0, -3.0, 2.0), trial("c", 40.0, -2.0, 3.0),
            trial("d", 30.0, -4.0, 4.0), {"trial": "e", "status": "error", "rungs": 0, "miou": None,
                                          "label_free": None, "proxy": None, "error": "RuntimeError: boom"}]
    # the rung reports rank the other way round (ρ −1 for both), so the two measures cannot be the same numbers
    rungs = [{"trial": "a", "rung": 1, "miou": 10.0, "label_free": -1.0, "proxy": 1.0},
             {"trial": "b", "rung": 1, "miou": 20.0, "label_free": -2.0, "proxy": 2.0},
             {"trial": "c", "rung": 1, "miou": 30.0, "label_free": -3.0, "proxy": 3.0}]
    summary = write_outputs(sweep, rows, rungs)
    assert summary["label_free_trial_tracking"] == {"spearman": pytest.approx(0.8), "points": 4}
    assert summary["proxy_trial_tracking"] == {"spearman": pytest.approx(1.0), "points": 4}
    assert summary["label_free_tracking"] == {"spearman": pytest.approx(-1.0), "points": 3}
    text = (sweep.run_dir / "results.md").read_text()
    assert "Over the 4 trials (each one's last report, the table below): ρ(mIoU, label-free) = 0.80." in text
    assert "Over the 4 trials (each one's last report, the table below): ρ(mIoU, −proxy) = 1.00." in text
    assert "over 3 rung reports: Spearman ρ(mIoU, label-free) = -1.00" in text


def _load_job():
    spec = importlib.util.spec_from_file_location("tune_job", REPO / "jobs" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: where `ray job submit --working-dir .` unpacks the working dir (and so where a relative run folder lands)
RAY_COPY = ("session_x", "runtime_resources", "working_dir_files", "_ray_pkg_0123abcd")


def test_run_folders_in_rays_temporary_working_dir_copy_are_refused(tmp_path, monkeypatch):
    from semi2i import io_paths

    io_paths.refuse_ephemeral(tmp_path / "runs" / "tune-x")  # an ordinary folder is fine
    io_paths.refuse_ephemeral("runs/tune-x")
    with pytest.raises(ConfigError, match="temporary copy of the working dir.*; pass an absolute --run-dir$"):
        io_paths.refuse_ephemeral(tmp_path.joinpath(*RAY_COPY, "runs", "tune-x"), hint="pass an absolute --run-dir")
    copy_dir = tmp_path.joinpath(*RAY_COPY)
    copy_dir.mkdir(parents=True)
    monkeypatch.chdir(copy_dir)  # the job's working dir: a relative folder resolves into the copy
    with pytest.raises(ConfigError, match=r"runs/tune-x: .*working_dir_files.*set SEMI2I_RUNS"):
        io_paths.refuse_ephemeral("runs/tune-x")
    # one function, shared by the jobs
    from semi2i.cli import adapt, adapt_multi, tune

    assert tune.refuse_ephemeral is adapt.refuse_ephemeral is adapt_multi.refuse_ephemeral is io_paths.refuse_ephemeral


def test_cli_refuses_a_run_folder_in_rays_working_dir_copy_before_starting_ray(tmp_path, monkeypatch, capsys):
    import sys

    job = _load_job()
    config = _config(tmp_path)
    copy_dir = tmp_path.joinpath(*RAY_COPY)
    copy_dir.mkdir(parents=True)
    monkeypatch.chdir(copy_dir)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` would raise: the refusal must come first
    for argv in (["--run-dir", "runs/sweep"], []):  # relative --run-dir, and the default runs/tune-<name>
        assert job.main(["--config", config, "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tune: ") and "temporary copy of the working dir" in err and err.count("\n") == 1, err
        assert "SEMI2I_RUNS" not in err  # tune.py's default folder does not read it
    assert not (copy_dir / "runs").exists()


@pytest.mark.ray
def test_cli_refuses_resources_that_never_fit(tmp_path, ray_session, capsys):
    job = _load_job()
    rc = job.main(["--config", _config(tmp_path), "--workers", "3", "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert rc == 2 and "one trial needs 4 CPU" in capsys.readouterr().err  # driver 1 + 3 workers on a 3-CPU cluster
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------
# ASHA and resume on the real trial loop and Tuner, with a cheap rung


@pytest.mark.ray
@pytest.mark.slow
def test_asha_stops_the_hopeless_trial_and_an_errored_sweep_resumes(tmp_path, ray_session):
    good = {**REFERENCE, "decay_epoch": 2}
    hopeless = {"lambda_cross": 0.01, "lambda_self": 0.01, "lambda_grad": 0.01, "lambda_adv": 1000.0, "decay_epoch": 0}
    path = _config(tmp_path, num_samples=2, points_to_evaluate=[good, hopeless], max_concurrent_trials=1)
    data = yaml.safe_load(open(path))
    data["overrides"]["semi2i"]["epochs"] = 4  # 4 rungs: ASHA milestones 1, 2, 4
    open(path, "w").write(yaml.safe_dump(data))
    cfg, settings = load_sweep_config(path)
    sweep = make_sweep(cfg, settings, tmp_path / "sweep")
    assert sweep.n_rungs == 4 and sweep.metric == "miou" and sweep.concurrency == 1

    def cheap_rung(sweep, config, rung, trial_dir):  # defined here: Tune ships it by value
        import time

        with (trial_dir / "calls.txt").open("a") as f:
            f.write(f"{rung}\n")
        with (sweep.run_dir / "spans.txt").open("a") as f:  # when each trial was busy
            f.write(f"{trial_dir.name} {time.time()}\n")
        bad = config["lambda_adv"] > 100
        if not bad and rung == 3 and not (trial_dir / ".crashed").exists():
            (trial_dir / ".crashed").touch()
            raise RuntimeError("injected interruption")
        return {"miou": (5.0 if bad else 50.0) + rung, "proxy": (3.0 if bad else 1.0) - 0.1 * rung}

    first = run_sweep(sweep, cheap_rung, verbose=0)
    rows = _csv(sweep.run_dir / "results.csv")
    assert {r["status"] for r in rows} == {"error", "stopped early"}

    second = run_sweep(sweep, cheap_rung, verbose=0)  # Tuner.restore: the errored trial continues from rung 3
    rows = _csv(sweep.run_dir / "results.csv")
    by_adv = {float(r["lambda_adv"]): r for r in rows}
    assert by_adv[1.0]["status"] == "completed" and by_adv[1.0]["rungs"] == "4" and float(by_adv[1.0]["miou"]) == 54.0
    assert by_adv[1000.0]["status"] == "stopped early" and by_adv[1000.0]["rungs"] == "1"
    assert [r["lambda_adv"] for r in rows] == ["1.0", "1000.0"]  # sorted by the objective
    calls = {d.name: (d / "calls.txt").read_text().split() for d in (sweep.run_dir / "trials").iterdir()}
    g, h = by_adv[1.0]["trial"], by_adv[1000.0]["trial"]
    assert calls == {g: ["1", "2", "3", "3", "4"], h: ["1"]}  # rungs 1-2 were not recomputed after the resume
    order = [line.split()[0] for line in (sweep.run_dir / "spans.txt").read_text().splitlines()]
    assert order == [g, g, g, h, g, g]  # one trial at a time, in the order of points_to_evaluate
    assert first["best"]["lambda_adv"] == 1.0 and second["best"]["rungs"] == 4
    best = load_adapt_config(sweep.run_dir / "best.yaml")
    assert best.profile.semi2i.lambdas == tuple(REFERENCE[k] for k in ("lambda_cross", "lambda_self", "lambda_grad", "lambda_adv"))
    assert best.profile.semi2i.decay_epoch == 2
    assert best.profile.semi2i.epochs == 4 and best.profile.unet.finetune_steps == 2  # other overrides kept
    rungs = _csv(sweep.run_dir / "rungs.csv")
    assert len(rungs) == 5 and all(r["proxy"] for r in rungs)
    assert "Spearman" in (sweep.run_dir / "results.md").read_text()


# ---------------------------------------------------------------------------------------------------
# a real tiny sweep through jobs/tune.py


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_real_sweep_writes_table_and_best_config_and_resumes(tmp_path, ray_session):
    job = _load_job()
    run_dir = tmp_path / "run"
    # one rung of 2 SemI2I epochs per trial: 5 Ray Train runs in all (the multi-rung loop, ASHA and resume
    # are covered above; Ray Train continuing a run to more steps by test_distributed)
    # the objective a user without target labels gets: the label-free score (the mIoU is still reported beside it)
    argv = ["--config", _config(tmp_path, epochs_per_rung=2), "--num-samples", "2", "--run-dir", str(run_dir), "--quiet",
            "--metric", "label_free"]
    assert job.main(argv) == 0

    rows = _csv(run_dir / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "completed" and r["rungs"] == "1" for r in rows)
    assert json.loads((run_dir / "summary.json").read_text())["metric"] == "label_free"
    scores = [float(r["label_free"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)  # higher = better, −distance
    assert all(0 <= float(r["miou"]) <= 100 for r in rows)
    assert all(float(r["proxy"]) >= 0 for r in rows)
    table = (run_dir / "results.md").read_text()
    assert "| rank | trial |" in table and "(best)" in table and "Source-only U-net" in table
    best = load_adapt_config(run_dir / "best.yaml")
    winner = rows[0]
    assert best.name == "tiny-sweep-tuned"
    assert best.profile.semi2i.lambdas == pytest.approx(tuple(float(winner[k]) for k in
                                                              ("lambda_cross", "lambda_self", "lambda_grad", "lambda_adv")))
    assert best.profile.semi2i.decay_epoch == int(winner["decay_epoch"]) and best.profile.semi2i.base_width == 4
    trial = run_dir / "trials" / winner["trial"]
    metrics = json.loads((trial / "rung1" / "metrics.json").read_text())
    assert metrics["semi2i_steps"] == 4 and {"miou", "label_free", "proxy", "style_distance", "structure_loss"} <= set(metrics)
    assert metrics["label_free"] == -metrics["distance_deep"] == float(rows[0]["label_free"])
    assert all(metrics[f"{stage}_s"] > 0 for stage in ("semi2i", "stylize", "finetune", "segment"))  # the stage runner's times
    # the rung's pieces ran in the trial actor, on the worker node Tune placed it on: never in this driver or on the head
    places = json.loads((trial / "rung1" / "placement.json").read_text())["stages"]
    assert {"stylize", "map", "score"} <= set(places) and ran_off_the_driver(places) == []
    assert len({p["pid"] for where in places.values() for p in where}) == 1
    assert (trial / "semi2i.pt").exists() and (trial / "rung1" / "unet.pt").exists()
    assert len(_csv(run_dir / "rungs.csv")) == 2
    assert (run_dir / "shared" / "unet_source.pt").exists()

    # re-running resumes the finished sweep: nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.pt")}
    assert job.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _csv(run_dir / "results.csv") == rows
