"""--reuse-from: a run starts from another run folder's outputs that SemI2I's settings cannot change."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from semi2i.adapt_config import load_adapt_config
from semi2i.config import ConfigError
from semi2i.pipeline import AdaptRun
from semi2i.reuse import config_difference, is_semi2i_output

CONFIG = {
    "name": "pair",
    "profile": "quick",
    "synthetic": {"size": 96, "rasters": 1, "seed": 2},
    "classes": ["building", "road", "vegetation", "water", "land"],
    "overrides": {"semi2i": {"lambda_grad": 20.0}},
}


def _run(tmp_path, name: str, changes: dict) -> AdaptRun:
    data = copy.deepcopy(CONFIG)
    for section, values in changes.items():
        data["overrides"].setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return AdaptRun(load_adapt_config(path), tmp_path / name)


def _finished_run(run: AdaptRun) -> None:
    """A run folder as a finished adapt run leaves it (file contents do not matter here)."""
    run.run_dir.mkdir(parents=True)
    run._write_resolved_config()
    for name in ("unet_source.pt", "colormapgan.pt", "semi2i.pt", "unet_colormapgan.pt", "unet_semi2i.pt",
                 "unet_target_oracle.pt", "report.json", "semi2i_choice.json"):
        run.path(name).write_text(name)
    for city in ("source", "target"):
        run.path("stores", f"{city}.zarr").mkdir(parents=True)
        run.path("stores", f"{city}.zarr", "zarr.json").write_text("{}")
    for method in ("colormapgan", "semi2i"):
        run.path("stylized", method, "store.zarr").mkdir(parents=True)
        run.path("stylized", method, "store.zarr", "zarr.json").write_text("{}")
        run.path("maps", method).mkdir(parents=True)
        run.path("maps", method, "job.json").write_text("{}")
        run.path("scores").mkdir(exist_ok=True)
        run.path("scores", f"{method}.json").write_text("{}")
    run.path("maps", "gray_world").mkdir(parents=True)  # an unfinished mapping: no job.json
    run.path("ray", "semi2i").mkdir(parents=True)
    run.path("previews").mkdir()


def test_semi2i_settings_may_differ_and_only_the_other_outputs_are_linked(tmp_path):
    old = _run(tmp_path, "old", {})
    _finished_run(old)
    new = _run(tmp_path, "new", {"semi2i": {"ema_decay": 0.995, "lambda_grad": 30.0}})
    new.path("unet_target_oracle.pt").parent.mkdir(parents=True)
    new.path("unet_target_oracle.pt").write_text("mine")  # already there: never replaced
    linked = new.reuse(old.run_dir)
    assert sorted(linked) == sorted([
        "colormapgan.pt", "unet_colormapgan.pt", "unet_source.pt", "stores/source.zarr", "stores/target.zarr",
        "stylized/colormapgan", "maps/colormapgan", "scores/colormapgan.json"])
    assert os.path.samefile(new.path("unet_source.pt"), old.path("unet_source.pt"))  # a hard link, no copy
    assert os.path.samefile(new.path("stores", "source.zarr", "zarr.json"), old.path("stores", "source.zarr", "zarr.json"))
    assert new.path("unet_target_oracle.pt").read_text() == "mine"
    for semi2i in ("semi2i.pt", "unet_semi2i.pt", "stylized/semi2i", "maps/semi2i", "scores/semi2i.json",
                   "semi2i_choice.json", "report.json", "ray", "previews", "maps/gray_world"):
        assert not new.path(semi2i).exists(), semi2i
    assert new.reuse(old.run_dir) == []  # a second call finds everything in place


@pytest.mark.parametrize("changes, key", [
    ({"unet": {"train_steps": 50}}, "resolved_profile.unet.train_steps"),
    ({"colormapgan": {"lr_g": 1e-3}}, "resolved_profile.colormapgan.lr_g"),
])
def test_any_other_difference_is_refused_naming_the_key(tmp_path, changes, key):
    old = _run(tmp_path, "old", {})
    _finished_run(old)
    new = _run(tmp_path, "new", changes)
    with pytest.raises(ConfigError, match=rf"--reuse-from .*old: {key} is "):
        new.reuse(old.run_dir)
    assert not new.path("unet_source.pt").exists()


def test_not_a_run_folder_and_own_folder_refused(tmp_path):
    run = _run(tmp_path, "new", {})
    with pytest.raises(ConfigError, match="no config.resolved.yaml"):
        run.reuse(tmp_path)
    _finished_run(_run(tmp_path, "same", {}))
    with pytest.raises(ConfigError, match="own folder"):
        _run(tmp_path, "same", {}).reuse(tmp_path / "same")


def test_difference_and_names():
    base = {"seed": 0, "resolved_profile": {"unet": {"lr": 1e-3}, "semi2i": {"lr": 1e-3}}, "name": "a"}
    assert config_difference(base, {**base, "name": "b", "resolved_profile": {**base["resolved_profile"],
                                                                              "semi2i": {"lr": 5.0}}}) is None
    assert config_difference(base, {**base, "seed": 1}) == "seed is 1 there, 0 here"
    assert config_difference(base, {k: v for k, v in base.items() if k != "seed"}) == "seed is None there, 0 here"
    names = ["semi2i.pt", "semi2i_seed3.pt", "unet_semi2i.pt", "unet_semi2i_seed0.pt", "semi2i_seed1", "semi2i.json"]
    assert all(is_semi2i_output(n) for n in names)
    assert not any(is_semi2i_output(n) for n in ["unet_source.pt", "colormapgan.pt", "semi2i_choice.json", "stores"])
