"""Source windows drawn in a target class prior (label-shift correction) and the prior's label-free estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semi2i.adapt_config import adapt_config_from_dict
from semi2i.config import ConfigError
from semi2i.data.class_prior import prior_weighted_windows, prior_weights, weighted_class_mix, window_class_fractions
from semi2i.data.ingest import ingest_city
from semi2i.data.patches import city_windows
from semi2i.target_prior import PriorError, estimate_target_prior, floored_prior, trusted_method


def test_prior_weights_by_hand():
    # two pure windows and a half-and-half one: the source is 50/50
    fractions = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    first = prior_weights(fractions, [0.8, 0.2], iterations=0)
    # ratios q/p = 1.6 and 0.4 per pixel: weights 1.6, 0.4, 1.0 (mean 1), class 0 gets (1.6 + 0.5) / 3
    assert first == pytest.approx([1.6, 0.4, 1.0])
    assert weighted_class_mix(fractions, first)[0] == pytest.approx(0.7)
    # raking closes the gap the shared window leaves
    raked = prior_weights(fractions, [80, 20])  # any scale
    assert weighted_class_mix(fractions, raked) == pytest.approx([0.8, 0.2], abs=1e-6)
    assert raked.mean() == pytest.approx(1.0)


def test_prior_weights_edge_cases():
    fractions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # class 2 absent, last window unlabelled
    weights = prior_weights(fractions, [0.25, 0.25, 0.5])
    assert weights[2] == 1.0 and weights[0] == pytest.approx(weights[1])
    with pytest.raises(ValueError, match="needs 3 non-negative values"):
        prior_weights(fractions, [1.0, 1.0])


@pytest.fixture
def two_class_city(tmp_path, write):
    img = np.full((3, 64, 96), 100, np.uint8)
    lbl = np.zeros((64, 96), np.uint8)
    lbl[:, 64:] = 1  # class 1 is the right third: a third of the 32 px windows
    write(tmp_path / "img" / "a.tif", img)
    write(tmp_path / "lbl" / "a.tif", lbl)
    return ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "c.zarr", labels=str(tmp_path / "lbl/*.tif"),
                       classes=["a", "b"], min_size=32)


def test_windows_repeat_by_weight(two_class_city):
    windows = city_windows(two_class_city, size=32, overlap=0)  # 2 x 3 windows, pure
    fractions = window_class_fractions(two_class_city, windows)
    assert fractions[:, 1].tolist() == [0, 0, 1, 0, 0, 1]
    drawn = prior_weighted_windows(two_class_city, windows, [0.5, 0.5], copies=4)
    counts = {w: drawn.count(w) for w in windows}
    assert set(drawn) == set(windows)  # no window is dropped
    # class b's windows weigh 0.5/(1/3) = 1.5, class a's 0.5/(2/3) = 0.75, over a mean of 1: 6 and 3 copies
    assert [counts[w] for w in windows] == [3, 3, 6, 3, 3, 6]


def test_floored_prior_and_trusted_method():
    # the map misses class 2; the source holds 60 % of it: floored at 30 %, then renormalised
    assert floored_prior([0.6, 0.4, 0.0], [0.2, 0.2, 0.6]).tolist() == pytest.approx([0.6 / 1.3, 0.4 / 1.3, 0.3 / 1.3])
    report = {"methods": {"source_only": {"label_free": -9.0}, "colormapgan": {"label_free": -0.2},
                          "semi2i": {"label_free": -0.3}, "semi2i_seed1": {"label_free": -0.01},
                          "target_oracle": {"label_free": -0.001}, "cyclegan": {"not_applicable": "x"}}}
    assert trusted_method(report) == "colormapgan"
    with pytest.raises(PriorError):
        trusted_method({"methods": {"target_oracle": {"label_free": 0.0}}})


def test_estimate_from_a_run_folder(tmp_path, write, monkeypatch):
    run = tmp_path / "run"
    lbl = np.zeros((32, 64), np.uint8)
    lbl[:, 48:] = 1  # the source: 75 % a, 25 % b
    for city in ("source", "target"):
        write(tmp_path / city / "img" / "t.tif", np.full((3, 32, 64), 50, np.uint8))
        write(tmp_path / city / "lbl" / "t.tif", lbl)
        ingest_city(str(tmp_path / city / "img/*.tif"), run / "stores" / f"{city}.zarr",
                    labels=str(tmp_path / city / "lbl/*.tif"), classes=["a", "b"], min_size=32)
    (run / "report.json").write_text(json.dumps({"methods": {"colormapgan": {"label_free": -0.1},
                                                             "semi2i": {"label_free": -0.5}}}))
    seen = []

    def fake_classes(maps, raster):  # the chosen method's map: all b, plus a nodata row
        seen.append(maps.name)
        out = np.ones((32, 64), np.uint8)
        out[0] = 255
        return out

    monkeypatch.setattr("semi2i.mapping.read_classes", fake_classes)
    estimate = estimate_target_prior(run)
    assert seen == ["colormapgan"] and estimate["method"] == "colormapgan"
    assert estimate["map_fractions"] == [0.0, 1.0] and estimate["source_fractions"] == [0.75, 0.25]
    assert estimate["prior"] == pytest.approx([0.375 / 1.375, 1 / 1.375], abs=1e-4)  # a floored at half its 75 %
    with pytest.raises(PriorError, match="no readable report.json"):
        estimate_target_prior(tmp_path / "elsewhere")


def test_config_refuses_a_prior_of_the_wrong_length():
    data = {"name": "x", "synthetic": {}, "classes": ["a", "b", "c"], "overrides": {"semi2i": {"target_class_prior": [1, 2]}}}
    with pytest.raises(ConfigError, match="target_class_prior: needs one share per class \\(3: a, b, c\\)"):
        adapt_config_from_dict(data, "cfg.yaml")
    data["overrides"]["semi2i"]["target_class_prior"] = [1, 2, 1]
    assert adapt_config_from_dict(data, "cfg.yaml").profile.semi2i.target_class_prior == (1, 2, 1)


def test_multicity_refuses_a_prior(tmp_path):
    from semi2i.multicity import load_multicity_config

    cfg = tmp_path / "m.yaml"
    cfg.write_text("name: m\nsynthetic: {}\noverrides: {semi2i: {target_class_prior: [1, 1, 1, 1, 1]}}\n")
    with pytest.raises(ConfigError, match="the multi-city model trains every city pair"):
        load_multicity_config(cfg)
