"""Benchmark: seconds per training step of the baseline GANs (ColorMapGAN, CycleGAN) next to SemI2I.

    python benchmarks/bench_baselines.py                          # quick profile, all three models
    python benchmarks/bench_baselines.py --profiles paper quick --models cyclegan --steps 3

Median of ``--steps`` timed steps after ``--warmup`` steps, one random patch per domain (RGB↔RGB),
``--threads`` torch threads (2 = this machine's cores). Multiply by the profile's steps
(epochs × max_steps_per_epoch) for a stage's training time.
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


def make_step(model: str, profile_name: str, bands: int):
    profile = load_profile(profile_name)
    cfg = dataclasses.replace(getattr(profile, model), in_bands_a=bands, in_bands_b=bands)
    if model == "semi2i":  # Eq. 3 per step (the quick profile's lr_schedule) needs its line; the rate does not change the time
        from semi2i.training.semi2i_step import SemI2IStep
        return cfg, SemI2IStep.create(cfg, steps_per_epoch=cfg.max_steps_per_epoch or 1)
    if model == "colormapgan":
        from semi2i.training.colormapgan_step import ColorMapGANStep
        return cfg, ColorMapGANStep.create(cfg)
    from semi2i.training.cyclegan_step import CycleGANStep
    return cfg, CycleGANStep.create(cfg)


def bench(model: str, profile_name: str, warmup: int, steps: int, bands: int) -> dict:
    cfg, step = make_step(model, profile_name, bands)
    size = cfg.patch_size
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, bands, size, size, generator=gen) * 2 - 1
    b = torch.rand(1, bands, size, size, generator=gen) * 2 - 1
    for _ in range(warmup):
        step.train_step(a, b)
    with FlopCounterMode(display=False) as counter:  # one extra (untimed) step, to judge the rate
        step.train_step(a, b)
    flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step.train_step(a, b)
        times.append(time.perf_counter() - start)
    m = step.models
    generators = [getattr(m, n) for n in ("generator", "gen_ab", "gen_ba") if hasattr(m, n)]
    discriminators = [getattr(m, n) for n in ("disc_a", "disc_b") if hasattr(m, n)]
    total_steps = cfg.epochs * cfg.max_steps_per_epoch if cfg.max_steps_per_epoch else None
    median = statistics.median(times)
    return {
        "model": model, "profile": profile_name, "patch": size, "s_per_step": median, "min_s": min(times),
        "gflop_per_step": flops / 1e9, "gflops": flops / 1e9 / median,
        "generator_params": sum(count_parameters(g) for g in generators),
        "disc_params": sum(count_parameters(d) for d in discriminators),
        "steps": total_steps, "minutes": total_steps * median / 60 if total_steps else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["quick"])
    parser.add_argument("--models", nargs="+", default=["colormapgan", "cyclegan", "semi2i"],
                        choices=["colormapgan", "cyclegan", "semi2i"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bands", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.steps} steps after "
          f"{args.warmup} warm-up")
    for profile in args.profiles:
        for model in args.models:
            r = bench(model, profile, args.warmup, args.steps, args.bands)
            budget = f", {r['steps']} steps = {r['minutes']:.1f} min" if r["steps"] else ""
            print(f"{r['profile']:>6} {r['model']:>11}: {r['patch']}² | {r['s_per_step']:.3f} s/step (min {r['min_s']:.3f}), "
                  f"{r['gflop_per_step']:.1f} GFLOP/step = {r['gflops']:.0f} GFLOP/s{budget} | generator(s) "
                  f"{r['generator_params']:,} params, discriminator(s) {r['disc_params']:,}")


if __name__ == "__main__":
    main()
