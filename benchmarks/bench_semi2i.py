"""Benchmark: seconds per SemI2I training step (G + D update + Algorithm 1) and parameter counts.

    python benchmarks/bench_semi2i.py                      # paper widths at 256², and the quick profile
    python benchmarks/bench_semi2i.py --profiles quick --steps 10

Median of ``--steps`` timed steps after ``--warmup`` steps, one random patch per domain (RGB↔RGB),
``--threads`` torch threads (2 = this machine's cores). Compare with ../shared/perf-notes.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from semi2i.config import load_profile
from semi2i.models.semi2i import count_parameters
from semi2i.training.semi2i_step import SemI2IStep


def bench(profile_name: str, warmup: int, steps: int, bands: int) -> dict:
    cfg = dataclasses.replace(load_profile(profile_name).semi2i, in_bands_a=bands, in_bands_b=bands)
    step = SemI2IStep.create(cfg, steps_per_epoch=cfg.max_steps_per_epoch or 1)  # the rate does not change the time
    size = cfg.patch_size
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, bands, size, size, generator=gen) * 2 - 1
    b = torch.rand(1, bands, size, size, generator=gen) * 2 - 1
    for _ in range(warmup):
        step(a, b)
    with FlopCounterMode(display=False) as counter:  # one extra (untimed) step, to judge the rate
        step(a, b)
    flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(a, b)
        times.append(time.perf_counter() - start)
    m = step.models
    return {
        "profile": profile_name,
        "patch": size,
        "width": cfg.base_width,
        "res_blocks": cfg.n_res_blocks,
        "ndf": cfg.disc_width,
        "s_per_step": statistics.median(times),
        "min_s": min(times),
        "gflop_per_step": flops / 1e9,
        "gflops": flops / 1e9 / statistics.median(times),
        "generator_params": count_parameters(m.generator),
        "disc_params_each": count_parameters(m.disc_a),
        "disc_params_total": count_parameters(m.disc_a) + count_parameters(m.disc_b),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["paper", "quick"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bands", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    for name in args.profiles:
        r = bench(name, args.warmup, args.steps, args.bands)
        print(
            f"{r['profile']:>6}: {r['patch']}² w={r['width']} res={r['res_blocks']} ndf={r['ndf']} | "
            f"{r['s_per_step']:.3f} s/step (min {r['min_s']:.3f}), {r['gflop_per_step']:.0f} GFLOP/step = "
            f"{r['gflops']:.0f} GFLOP/s | generator {r['generator_params']:,} params, "
            f"discriminators {r['disc_params_each']:,} each ({r['disc_params_total']:,} total)"
        )


if __name__ == "__main__":
    main()
