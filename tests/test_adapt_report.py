"""report.json's share of the source-only -> oracle gap that SemI2I closes: by hand, and absent where there is
no gap to speak of."""

from __future__ import annotations

from semi2i.adapt_report import MIN_GAP_MIOU, gap_closed


def _rows(source_only, semi2i, oracle):
    return {"source_only": {"miou": source_only}, "semi2i": {"miou": semi2i}, "target_oracle": {"miou": oracle}}


def test_gap_closed_by_hand():
    assert gap_closed(_rows(10.0, 40.0, 50.0)) == 0.75  # 30 of 40 points
    assert gap_closed(_rows(10.0, 5.0, 50.0)) == -0.125  # worse than source-only: negative
    assert gap_closed(_rows(10.0, 60.0, 50.0)) == 1.25


def test_no_gap_no_share():
    assert gap_closed(_rows(3.42, 3.43, 3.42 + MIN_GAP_MIOU / 2)) is None  # a ratio over half a point is noise
    assert gap_closed(_rows(20.0, 30.0, 15.0)) is None  # the oracle below source-only
    assert gap_closed(_rows(10.0, 40.0, None)) is None  # no target labels
    assert gap_closed({"source_only": {"miou": 10.0}, "semi2i": {"miou": 20.0}}) is None
