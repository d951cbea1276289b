"""Benchmark: seconds per SemI2I training step (G + D update + Algorithm 1) and parameter counts.

    python benchmarks/bench_semi2i.py                      # paper widths at 256², and the quick profile
    python benchmarks/bench_semi2i.py --profiles quick --steps 10
    python benchmarks/bench_semi2i.py --profiles quick --steps 15 --rounds 3 --layouts nchw nhwc
    python benchmarks/bench_semi2i.py --profiles quick --steps 30 --rounds 3 --layouts nchw inductor

Median of ``--steps`` timed steps after ``--warmup`` steps, one random patch per domain (RGB↔RGB),
``--threads`` torch threads (2 = this machine's cores). Compare with ../shared/perf-notes.md.
``--layouts nchw nhwc`` also times the step with the networks and patches in channels_last (NHWC, as
``unet.channels_last`` does for the U-net), in ``--rounds`` alternating blocks so that both layouts see
the same host, and reports each layout's ratio to NCHW in the same run. ``inductor`` is the NCHW step with
the networks compiled by TorchInductor as ``semi2i.compile`` does (semi2i.training.compile); its one-off
compilation is timed apart (``warmup_s``: the warm-up steps, cold or from Inductor's on-disk cache).
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
from semi2i.training.compile import compile_in_place
from semi2i.training.semi2i_step import SemI2IStep


def _step(cfg, bands: int, layout: str):
    channels_last = layout == "nhwc"
    step = SemI2IStep.create(cfg, steps_per_epoch=cfg.max_steps_per_epoch or 1)  # the rate does not change the time
    if layout == "inductor":  # after create(): the weight EMA stays eager, as in training
        compile_in_place((step.generator, step.disc_a, step.disc_b))
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, bands, cfg.patch_size, cfg.patch_size, generator=gen) * 2 - 1
    b = torch.rand(1, bands, cfg.patch_size, cfg.patch_size, generator=gen) * 2 - 1
    if channels_last:
        for module in (step.generator, step.disc_a, step.disc_b):
            module.to(memory_format=torch.channels_last)
        a, b = (x.contiguous(memory_format=torch.channels_last) for x in (a, b))
    return step, a, b


def _count_flops(step, a, b) -> float:
    """FLOPs of one extra (untimed) eager step, to judge the rate."""
    with FlopCounterMode(display=False) as counter:
        step(a, b)
    return counter.get_total_flops()


def bench(profile_name: str, warmup: int, steps: int, bands: int, layouts=("nchw",), rounds: int = 1) -> list[dict]:
    cfg = dataclasses.replace(load_profile(profile_name).semi2i, in_bands_a=bands, in_bands_b=bands)
    runs = {layout: _step(cfg, bands, layout) for layout in layouts}
    flops, warmup_s = {}, {}
    for layout, (step, a, b) in runs.items():
        start = time.perf_counter()
        for _ in range(warmup):
            step(a, b)
        warmup_s[layout] = time.perf_counter() - start
        if layout != "inductor":  # the counter does not see inside compiled graphs
            flops[layout] = _count_flops(step, a, b)
    if "inductor" in runs:  # the same arithmetic as NCHW
        flops["inductor"] = flops.get("nchw") or _count_flops(*_step(cfg, bands, "nchw"))
    times = {layout: [] for layout in layouts}
    for _ in range(rounds):  # alternating blocks: both layouts see the same minutes of the host
        for layout, (step, a, b) in runs.items():
            for _ in range(steps):
                start = time.perf_counter()
                step(a, b)
                times[layout].append(time.perf_counter() - start)
    rows = []
    for layout, (step, _, _) in runs.items():
        m = step.models
        seconds = statistics.median(times[layout])
        rows.append({
            "profile": profile_name,
            "layout": layout,
            "patch": cfg.patch_size,
            "width": cfg.base_width,
            "res_blocks": cfg.n_res_blocks,
            "ndf": cfg.disc_width,
            "s_per_step": seconds,
            "warmup_s": warmup_s[layout],
            "min_s": min(times[layout]),
            "speed_vs_nchw": statistics.median(times["nchw"]) / seconds if "nchw" in times else None,
            "gflop_per_step": flops[layout] / 1e9,
            "gflops": flops[layout] / 1e9 / seconds,
            "generator_params": count_parameters(m.generator),
            "disc_params_each": count_parameters(m.disc_a),
            "disc_params_total": count_parameters(m.disc_a) + count_parameters(m.disc_b),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["paper", "quick"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--layouts", nargs="+", choices=["nchw", "nhwc", "inductor"], default=["nchw"])
    parser.add_argument("--rounds", type=int, default=1, help="alternating timed blocks of --steps per layout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    for name in args.profiles:
        for r in bench(name, args.warmup, args.steps, args.bands, args.layouts, args.rounds):
            ratio = "" if r["speed_vs_nchw"] is None else f", {r['speed_vs_nchw']:.2f}x NCHW"
            print(
                f"{r['profile'] + ('' if r['layout'] == 'nchw' else ' ' + r['layout']):>6}: {r['patch']}² w={r['width']} res={r['res_blocks']} ndf={r['ndf']} | "
                f"{r['s_per_step']:.3f} s/step (min {r['min_s']:.3f}{ratio}; warm-up {r['warmup_s']:.1f} s), "
                f"{r['gflop_per_step']:.0f} GFLOP/step = "
                f"{r['gflops']:.0f} GFLOP/s | generator {r['generator_params']:,} params, "
                f"discriminators {r['disc_params_each']:,} each ({r['disc_params_total']:,} total)"
            )


if __name__ == "__main__":
    main()
