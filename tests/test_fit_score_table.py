"""studies/fit_score_table.py: each candidate's ρ and pick loss on a case worked out by hand."""

import pytest

from conftest import load_study


def _table():
    return load_study("fit_score_table")


def test_the_bound_breaks_a_near_tie_of_distances_by_the_fit():
    row = lambda method, miou, distance, bacc: {"method": method, "miou": miou, "label_free": distance,  # noqa: E731
                                                "fit_miou": bacc - 0.2, "fit_balanced_accuracy": bacc}
    # mIoU ranks a > b > c. The distance rates b above a (ranks 2 3 1: Σd² = 2, ρ = 1 − 6·2 / (3·8) = 0.5) and picks
    # b, 10 points below a. The bound: a −0.5 − 0.1 = −0.6, b −0.4 − 0.4 = −0.8, c −3 − 0.2 = −3.2: a > b > c, ρ 1.
    # The fit alone: a 0.9 > c 0.8 > b 0.6, ρ 0.5, and it picks a.
    table = _table().run_table([row("a", 50.0, -0.5, 0.9), row("b", 40.0, -0.4, 0.6), row("c", 10.0, -3.0, 0.8)])
    assert table["distance"] == {"rho": pytest.approx(0.5), "pick": "b", "loss": pytest.approx(10.0)}
    assert table["bound"] == {"rho": pytest.approx(1.0), "pick": "a", "loss": 0.0}
    assert table["fit_bacc"] == {"rho": pytest.approx(0.5), "pick": "a", "loss": 0.0}
