"""semi2i.source_fit: a class the source U-net did not learn on its own city is found, and the U-net retrained."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from semi2i import source_fit
from semi2i.report_table import source_fit_line

CLASSES = ["building", "road", "land"]


def test_a_class_found_on_under_5_percent_of_its_pixels_is_unlearned_unless_it_is_rare():
    # rows: labels, columns: predictions. building 100 px (90 right), road 50 px (2 found: recall 4 %),
    # land 848 px (all right), plus 2 px of a class "rare" (0.2 % of 1000: too rare to judge) never found.
    cm = np.array([[90, 0, 10, 0],
                   [0, 2, 48, 0],
                   [0, 0, 848, 0],
                   [0, 0, 2, 0]], np.float64)
    fit = source_fit.fit_from_confusion(cm, CLASSES + ["rare"])
    assert fit["unlearned"] == ["road"]
    assert fit["recall"] == {"building": 90.0, "road": 4.0, "land": 100.0, "rare": 0.0}
    assert fit["share"] == {"building": 10.0, "road": 5.0, "land": 84.8, "rare": 0.2}
    # IoU: building 90/100, road 2/50, land 848/(848 + 60) = 93.39 %, rare 0: mean of the four
    assert fit["iou"]["land"] == pytest.approx(100 * 848 / 908, abs=0.005)
    assert fit["miou"] == pytest.approx(100 * (0.9 + 0.04 + 848 / 908 + 0) / 4, abs=0.005)
    cm[1] = [0, 3, 47, 0]  # recall 6 %: learned (badly)
    assert source_fit.fit_from_confusion(cm, CLASSES + ["rare"])["unlearned"] == []


def test_the_first_attempt_that_learned_every_class_is_chosen_else_the_best_source_miou():
    bad, good = {"unlearned": ["road"], "miou": 50.0}, {"unlearned": [], "miou": 40.0}
    assert source_fit.choose([bad, good, good]) == 1
    assert source_fit.choose([{"unlearned": ["road"], "miou": 30.0}, {"unlearned": ["road"], "miou": 45.0},
                              {"unlearned": ["land"], "miou": 45.0}]) == 1


class _Run:
    """What train_checked_source_unet reads of an adapt run: its folder, seed and retrains."""

    def __init__(self, folder: Path, retrains: int, seed: int = 3):
        self.folder = folder
        self.cfg = SimpleNamespace(seed=seed, profile=SimpleNamespace(unet=SimpleNamespace(source_retrains=retrains)))

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def store(self, role: str):
        return SimpleNamespace(path=self.folder / "stores" / f"{role}.zarr")

    def unet_path(self, method: str) -> Path:
        assert method == "source_only"
        return self.folder / "unet_source.pt"


def _fake(monkeypatch, unlearned_by_seed: dict[int, list[str]]):
    """A training that writes its seed as the checkpoint, and a fit read from it; returns the trainings' log."""
    trained: list[tuple[str, str, int]] = []

    def train(stage: str, output: str, seed: int) -> None:
        trained.append((stage, output, seed))
        Path(output).write_text(str(seed))

    def measure(checkpoint: str, store: str) -> dict:
        seed = int(Path(checkpoint).read_text())
        return {"iou": {}, "recall": {c: 0.0 for c in unlearned_by_seed[seed]}, "share": {},
                "miou": float(seed % 1000 + seed // 1000),
                "unlearned": unlearned_by_seed[seed]}

    monkeypatch.setattr(source_fit, "measure_fit", measure)
    return trained, train


def test_an_unlearned_class_retrains_with_the_next_seed_and_publishes_the_attempt_that_learned(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # the fake training writes its output relative to the run folder
    run = _Run(tmp_path, retrains=2)
    trained, train = _fake(monkeypatch, {3: ["road"], 1003: [], 2003: []})
    with caplog.at_level(logging.WARNING):
        record = source_fit.train_checked_source_unet(run, train)
    assert trained == [("unet_source", "source_fit/unet_source_try0.pt", 3),
                       ("unet_source_try1", "source_fit/unet_source_try1.pt", 1003)]  # stops at the first that learned
    assert (tmp_path / "unet_source.pt").read_text() == "1003"
    assert record["chosen"] == 1 and record["seed"] == 1003 and record["unlearned"] == []
    assert [a["unlearned"] for a in record["attempts"]] == [["road"], []]
    assert json.loads((tmp_path / "source_fit.json").read_text()) == record
    assert "has not learned road on its own city (recall 0.0 %): training it again with seed 1003" in caplog.text
    # a resumed run (the published U-net lost, say) trains and measures nothing again
    (tmp_path / "unet_source.pt").unlink()
    trained.clear()
    assert source_fit.train_checked_source_unet(run, train) == record and trained == []
    assert (tmp_path / "unet_source.pt").read_text() == "1003"
    assert source_fit_line(record) == ("Source U-net on its own city (source labels): mIoU 4.00, attempt 2 of 2 "
                                       "(seed 1003; unet.source_retrains), every class learned.")


def test_no_attempt_learning_every_class_keeps_the_best_and_says_what_no_map_will_show(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    run = _Run(tmp_path, retrains=1, seed=0)
    trained, train = _fake(monkeypatch, {0: ["road"], 1000: ["road", "land"]})
    with caplog.at_level(logging.WARNING):
        record = source_fit.train_checked_source_unet(run, train)
    assert [seed for *_, seed in trained] == [0, 1000]
    assert record["chosen"] == 1 and (tmp_path / "unet_source.pt").read_text() == "1000"  # mIoU 1 > 0
    assert "no method's map will show them" in caplog.text
    assert "**Not learned: road, land**" in source_fit_line(record)


def test_without_retrains_the_fit_is_measured_and_reported_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained, train = _fake(monkeypatch, {3: ["road"]})
    record = source_fit.train_checked_source_unet(_Run(tmp_path, retrains=0), train)
    assert len(trained) == 1 and record["chosen"] == 0 and record["unlearned"] == ["road"]
    assert (tmp_path / "unet_source.pt").read_text() == "3"
