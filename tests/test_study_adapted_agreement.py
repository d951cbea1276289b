"""studies/study_adapted_agreement.py: map-against-map mIoU and the two picks' losses, by hand."""

import numpy as np
import pytest

from conftest import load_study


def test_map_miou_counts_only_the_classes_either_map_holds_and_skips_nodata():
    m = load_study("study_adapted_agreement")
    a = np.array([0, 0, 1, 1, 255], np.uint8)
    b = np.array([0, 1, 1, 1, 0], np.uint8)
    # class 0: intersection 1, union 2 -> 0.5; class 1: 2 / 3; class 2 in neither map; the nodata pixel left out
    assert m.map_miou(a, b, 3) == pytest.approx((0.5 + 2 / 3) / 2)


def test_each_pick_loses_the_best_candidates_miou_minus_its_own():
    m = load_study("study_adapted_agreement")
    rows = [{"run": "r1", "miou": {"source_only": 5.0, "semi2i": 50.0, "colormapgan": 30.0}, "adapted": ["semi2i", "colormapgan"],
             "score_pick": "colormapgan", "agreement_pick": "semi2i", "semi2i_pick": "semi2i"},
            {"run": "r2", "miou": {"source_only": 40.0, "semi2i": 10.0}, "adapted": [], "score_pick": "source_only",
             "agreement_pick": "source_only", "semi2i_pick": "source_only"}]
    lines = m.table(rows).splitlines()
    assert lines[2] == "| r1 | 2 | colormapgan (20.00) | semi2i (0.00) | semi2i (0.00) |"
    assert lines[-1] == "| mean / worst over 2 runs | | 10.00 / 20.00 | 0.00 / 0.00 | 0.00 / 0.00 |"
