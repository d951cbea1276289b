"""studies/study_guard_decisions.py: the candidates' ranking and the guard rules' harms and false alarms, by hand."""

import pytest

from conftest import load_study


def _row(run: str, method: str, p: float, lead: float, score: float, miou: float, source_score: float, source_miou: float):
    return {"run": run, "pair": "a -> b", "method": method, "maps_with": "fine_tune" if p < 0.05 else "source_unet",
            "p_value": p, "mean_lead": lead, "label_free_fine_tuned": score, "label_free_source_only": source_score,
            "miou_fine_tuned": miou, "miou_source_only": source_miou}


ROWS = [
    # run 1, source U-net: score −1.0, mIoU 50. A clear lead that maps higher (kept: right), a lead in the mean that
    # is not significant and maps lower (product falls back: right; the no-test rule keeps it: a harm of 4).
    _row("r1", "m1", 0.001, 0.5, -0.5, 60.0, -1.0, 50.0),
    _row("r1", "m2", 0.300, 0.1, -0.9, 46.0, -1.0, 50.0),
    # run 2, source U-net: score −2.0, mIoU 10. Behind in the score (p 0.99) but maps higher: a false alarm of 20 for
    # every rule but "always keep"; behind, not significantly (p 0.90), maps higher by 5.
    _row("r2", "m1", 0.990, -1.0, -3.0, 30.0, -2.0, 10.0),
    _row("r2", "m2", 0.900, -0.2, -2.2, 15.0, -2.0, 10.0),
]


def test_the_candidates_are_each_runs_source_unet_and_its_fine_tunes():
    m = load_study("study_guard_decisions")
    (table,) = m.candidate_ranking(ROWS)
    # six candidates: scores −1.0, −0.5, −0.9, −2.0, −3.0, −2.2 against mIoU 50, 60, 46, 10, 30, 15.
    # Ranks of the scores (ascending): −3.0:1, −2.2:2, −2.0:3, −1.0:4, −0.9:5, −0.5:6 → 4, 6, 5, 3, 1, 2;
    # of mIoU: 10:1, 15:2, 30:3, 46:4, 50:5, 60:6 → 5, 6, 4, 1, 3, 2. Σd² = 1 + 0 + 1 + 4 + 4 + 0 = 10,
    # ρ = 1 − 6·10 / (6·35) = 1 − 60/210 = 0.7143.
    assert table["points"] == 6 and table["runs"] == 2
    assert table["rho"] == pytest.approx(1 - 60 / 210)
    # run 1 picks m1 (−0.5, the best at 60: loss 0); run 2 picks the source U-net (−2.0, 10) against the best 30: loss 20
    assert table["mean_pick_loss"] == pytest.approx(10.0) and table["worst_pick_loss"] == pytest.approx(20.0)


def test_each_rule_counts_its_harms_and_false_alarms():
    m = load_study("study_guard_decisions")
    by_rule = {t["rule"].split(" (")[0]: t for t in m.rule_outcomes(ROWS)}
    product = by_rule["lead significant at 0.05 over the run's fine-tunes"]
    assert by_rule["lead significant at 0.05 each"] == {**product, "rule": by_rule["lead significant at 0.05 each"]["rule"]}
    # keeps r1/m1 (+10) only; falls back from r2/m1 (+20) and r2/m2 (+5): two false alarms, 25 given up; no harm
    assert (product["harms"], product["false_alarms"], product["alarm_miou"]) == (0, 2, 25.0)
    assert product["mean_gain"] == pytest.approx(10 / 4)
    no_test = by_rule["lead in the mean"]  # keeps r1/m1 and r1/m2 (−4): one harm
    assert (no_test["harms"], no_test["harm_miou"], no_test["false_alarms"]) == (1, 4.0, 2)
    assert no_test["mean_gain"] == pytest.approx((10 - 4) / 4)
    behind = by_rule["not significantly behind"]  # keeps all but r2/m1 (p 0.99)
    assert (behind["harms"], behind["false_alarms"], behind["alarm_miou"]) == (1, 1, 20.0)
    always = by_rule["always keep"]
    assert (always["harms"], always["false_alarms"], always["mean_gain"]) == (1, 0, pytest.approx((10 - 4 + 20 + 5) / 4))


def test_the_product_tests_at_five_percent_over_a_runs_fine_tunes():
    """Three fine-tunes in one run: each is tested at 0.05 / 3 = 0.0167 (Bonferroni). A lead at p 0.02 that maps 8
    below the source U-net is kept by a test at 5 % each (a harm of 8) and set aside by the product."""
    m = load_study("study_guard_decisions")
    rows = [_row("r", "m1", 0.001, 0.5, -0.5, 60.0, -1.0, 50.0), _row("r", "m2", 0.02, 0.2, -0.8, 42.0, -1.0, 50.0),
            _row("r", "m3", 0.6, -0.1, -1.1, 45.0, -1.0, 50.0)]
    by_rule = {t["rule"].split(" (")[0]: t for t in m.rule_outcomes(rows)}
    product, each = by_rule["lead significant at 0.05 over the run's fine-tunes"], by_rule["lead significant at 0.05 each"]
    assert (product["harms"], product["false_alarms"], product["mean_gain"]) == (0, 0, pytest.approx(10 / 3))
    assert (each["harms"], each["harm_miou"], each["mean_gain"]) == (1, 8.0, pytest.approx((10 - 8) / 3))
    # a row that carries its run's family (written since 2026-12-07) is tested by it, not by the rows counted
    alone = m.rule_outcomes([{**rows[1], "family": 1}])
    assert alone[0]["harms"] == 1 and alone[0]["harm_miou"] == 8.0
