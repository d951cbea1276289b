"""The benchmark scripts run on the shipped profiles: they build their training steps outside the training
loops, so a profile change (the quick profile's per-step Eq. 3, 2026-12-03) can break them without any other test
noticing. One timed step each, on 1 thread: what is checked is that they run and report, not their speed."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, pattern", [
    (["benchmarks/bench_semi2i.py", "--profiles", "quick"], r"quick: 128² w=16 .* s/step"),
    (["benchmarks/bench_semi2i.py", "--profiles", "quick", "--layouts", "nchw", "nhwc"],
     r"quick: 128² w=16 .* s/step \(min [0-9.]+, 1.00x NCHW; warm-up [0-9.]+ s\)[\s\S]*"
     r"quick nhwc: 128² w=16 .* s/step \(min [0-9.]+, [0-9.]+x NCHW; warm-up [0-9.]+ s\)"),
    (["benchmarks/bench_baselines.py", "--profiles", "quick", "--models", "semi2i", "colormapgan"],
     r"quick\s+semi2i: 128² .* s/step[\s\S]*quick\s+colormapgan: 128² .* s/step"),
])
def test_benchmark_runs_one_step_on_the_quick_profile(argv, pattern):
    out = subprocess.run([sys.executable, *argv, "--warmup", "0", "--steps", "1", "--threads", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(pattern, out.stdout), out.stdout


def test_bench_map_counts_the_pixels_its_windows_compute():
    """The overlap ceiling's divisor is the window grid's geometry, checked by hand: 2 x 2 windows of 256 px cover
    a 496 px side (496 = 2 * 256 - 16); a 500 px side needs 3 x 3, fitted to 192 px (3 * 192 - 2 * 16 >= 500)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_map", REPO / "benchmarks" / "bench_map.py")
    bench_map = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_map)
    window_pixels_per_pixel = bench_map.window_pixels_per_pixel
    assert window_pixels_per_pixel(496, 256, 16) == pytest.approx(4 * 256**2 / 496**2)
    assert window_pixels_per_pixel(500, 256, 16) == pytest.approx(9 * 192**2 / 500**2)
    assert window_pixels_per_pixel(256, 256, 16) == 1.0


def test_bench_map_reports_its_ratios_from_its_own_numbers(tmp_path):
    """One small region end to end: every ratio in the row is the quotient of the row's own medians."""
    import json

    out = subprocess.run([sys.executable, "benchmarks/bench_map.py", "--sizes", "0.25", "--repeats", "1", "--base-width", "4",
                          "--depth", "2", "--work", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.splitlines()[0])
    assert row["side"] == 500 and row["window"] == 256
    assert row["window_pixels_per_pixel"] == pytest.approx(9 * 192**2 / 500**2, abs=1e-4)
    ceiling = row["forward_windows_mpx_s"] / row["window_pixels_per_pixel"]
    assert row["overlap_ceiling_mpx_s"] == pytest.approx(ceiling, abs=2e-3)
    assert row["end_to_end_vs_overlap_ceiling"] == pytest.approx(row["end_to_end_mpx_s"] / ceiling, rel=2e-2)
    assert row["end_to_end_vs_forward"] == pytest.approx(row["end_to_end_mpx_s"] / row["forward_alone_mpx_s"], rel=2e-2)


def test_bench_cog_finds_the_staging_level_changes_no_byte_of_the_cog(tmp_path):
    """The COG benchmark's premise, checked on a small map: both staging levels give the same COG bytes (it exits 1
    otherwise), and its speed-up is the quotient of its own medians."""
    import json

    out = subprocess.run([sys.executable, "benchmarks/bench_cog.py", "--side", "600", "--repeats", "1", "--json",
                          str(tmp_path / "cog.json")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    row = json.loads((tmp_path / "cog.json").read_text())
    assert row["same_cog_bytes"] is True and row["mpx"] == 0.36 and row["cog_bytes"] > 0
    assert row["speedup"] == pytest.approx(row["stage_level6_s"] / row["stage_level1_s"], abs=2e-3)
