"""studies/study_colour_blind_anchor.py: the picks, their losses and the ρ of its tables, by hand."""

import pytest

from conftest import load_study

ROWS = [
    # the score picks histogram matching, whose map swapped two classes; the reference agrees best with SemI2I's
    {"run": "s/a-s0", "pair": "a -> b", "reference_miou": 60.0,
     "miou": {"source_only": 5.0, "histogram_matching": 20.0, "semi2i": 70.0},
     "label_free": {"source_only": -2.0, "histogram_matching": -0.1, "semi2i": -0.5},
     "agreement": {"source_only": 4.0, "histogram_matching": 30.0, "semi2i": 55.0}},
    # every fine-tune mapped with the source U-net: one map, a tie, source-only
    {"run": "s/a-s1", "pair": "a -> b", "reference_miou": 50.0,
     "miou": {"source_only": 40.0, "histogram_matching": 40.0, "semi2i": 40.0},
     "label_free": {"source_only": -1.0, "histogram_matching": -1.0, "semi2i": -1.0},
     "agreement": {"source_only": 30.0, "histogram_matching": 30.0, "semi2i": 30.0}},
]


def test_the_picks_and_their_losses():
    m = load_study("study_colour_blind_anchor")
    assert m.picks(ROWS[0]) == {"score_pick": "histogram_matching", "anchor_pick": "semi2i"}
    assert m.picks(ROWS[1]) == {"score_pick": "source_only", "anchor_pick": "source_only"}
    lines = m.table(ROWS).splitlines()
    assert lines[2] == "| s/a-s0 | 60.00 | 1.00 | histogram_matching (50.00) | semi2i (0.00) |"
    assert lines[3] == "| s/a-s1 | 50.00 | nan | source_only (0.00) | source_only (0.00) |"  # constant: no ρ
    assert lines[4] == "| mean / worst over 2 runs | | | 25.00 / 50.00 | 0.00 / 0.00 |"
    # per pair, over the six points of both runs
    pair = lines[-1].strip("| ").split(" | ")
    assert pair[:3] == ["a -> b", "2", "55.00"] and pair[5:] == ["25.00 / 50.00", "0.00 / 0.00"]
    assert float(pair[3].split()[0]) == pytest.approx(m.spearman([4, 30, 55, 30, 30, 30], [5, 20, 70, 40, 40, 40]), abs=0.005)


def test_spearman_averages_tied_ranks():
    m = load_study("study_colour_blind_anchor")
    # ranks of a: 1, 2.5, 2.5, 4; of b: 1, 2, 3, 4 -> Pearson of the ranks
    assert m.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert m.spearman([1, 1], [1, 2]) != m.spearman([1, 1], [1, 2])  # nan
