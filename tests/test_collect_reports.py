"""studies/collect_reports.py --rows: committed rows read back into the SemI2I and label-free issues' bars."""

import json
from pathlib import Path

import pytest

from conftest import load_study


def _module():
    return load_study("collect_reports")


def _rows(seed: int, mious: dict, scores: dict) -> list[dict]:
    return [{"run": f"runs/s{seed}", "pair": "a -> b", "setting": "", "seed": seed, "method": m, "miou": v,
             "label_free": scores.get(m), "tone_order": 0.8 if m == "semi2i" else None, "iou": {}}
            for m, v in mious.items()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_three_seeds_from_two_files_give_the_bars_worked_out_by_hand(tmp_path):
    m = _module()
    # SemI2I 40 / 44 / 38: mean 40.67, spread 6 (≤ 6: met). ColorMapGAN 36 / 38 / 39: mean 37.67, lead +3.00 (met).
    # Best simple baseline seed 20 (seed 1's gray world): worst SemI2I 38 − 20 = +18 (met).
    seeds = [
        ({"source_only": 10, "histogram_matching": 15, "gray_world": 12, "colormapgan": 36, "semi2i": 40}, 0),
        ({"source_only": 11, "histogram_matching": 14, "gray_world": 20, "colormapgan": 38, "semi2i": 44}, 1),
        ({"source_only": 9, "histogram_matching": 16, "gray_world": 13, "colormapgan": 39, "semi2i": 38}, 2),
    ]
    # A score that is mIoU / 100 ranks the 15 points exactly as mIoU does (ρ 1) and picks each seed's best (loss 0).
    rows = [r for mious, seed in seeds for r in _rows(seed, mious, {k: v / 100 for k, v in mious.items()})]
    a = _write(tmp_path / "a.jsonl", rows[:5])
    b = _write(tmp_path / "b.jsonl", rows[5:])
    read = m.read_rows([a, b])
    assert read == rows
    text = m.seed_tables(read)
    assert "| mean (spread) | 10.00 (2.00) | 15.00 (2.00) | 15.00 (8.00) | 37.67 (3.00) | 40.67 (6.00) |" in text
    assert ("SemI2I − ColorMapGAN (means): +3.00 (met); SemI2I's worst seed − best simple baseline seed: +18.00 (met); "
            "SemI2I spread 6.00 (met)") in text
    assert "SemI2I − source-only (means; the mild pair's bar): +30.67 (met)" in text
    ranking = m.label_free_ranking(read)
    assert "| a -> b | - | 15 | 3 | 1.00 | 0.00 | 0.00 | met |" in ranking
    # Seed 2's score put ColorMapGAN (39) below SemI2I (38): the pick loses 1 there, the mean 1 / 3.
    rows[13]["label_free"], rows[14]["label_free"] = 0.38, 0.39
    assert "| 0.33 | 1.00 | met |" in m.label_free_ranking(rows)


def test_two_seeds_hold_a_bar_but_do_not_meet_it(tmp_path):
    m = _module()
    rows = [r for seed in (0, 1) for r in _rows(seed, {"source_only": 5, "colormapgan": 30, "semi2i": 40}, {})]
    text = m.seed_tables(m.read_rows([_write(tmp_path / "r.jsonl", rows)]))
    assert "+10.00 (holds on 2 seeds, the bar needs 3)" in text


def test_a_run_met_twice_is_refused_naming_both_files(tmp_path):
    m = _module()
    rows = _rows(0, {"semi2i": 40}, {})
    a, b = _write(tmp_path / "a.jsonl", rows), _write(tmp_path / "b.jsonl", rows)
    with pytest.raises(SystemExit, match=r"b\.jsonl: run runs/s0 method semi2i is also in .*a\.jsonl"):
        m.read_rows([a, b])
