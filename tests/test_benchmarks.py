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
    (["benchmarks/bench_baselines.py", "--profiles", "quick", "--models", "semi2i", "colormapgan"],
     r"quick\s+semi2i: 128² .* s/step[\s\S]*quick\s+colormapgan: 128² .* s/step"),
])
def test_benchmark_runs_one_step_on_the_quick_profile(argv, pattern):
    out = subprocess.run([sys.executable, *argv, "--warmup", "0", "--steps", "1", "--threads", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(pattern, out.stdout), out.stdout
