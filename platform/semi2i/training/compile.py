"""Compiling SemI2I's training networks with TorchInductor (``semi2i.compile``).

Why: a quick-profile SemI2I step is ~60 % convolutions and ~40 % small element-wise work (instance norms,
reflection pads, ReLUs, the bf16 casts autocast makes at every op, AdaIN), each a separate pass over
memory in eager PyTorch. Inductor fuses that work into a few generated C++ loops. On a 2-core Zen 4 EPYC in
bf16 (2026-12-05): ``benchmarks/bench_semi2i.py --profiles quick --steps 30 --rounds 3 --layouts nchw
inductor`` 0.179 → 0.137 s per step (1.30x), and SemI2I's training in ``jobs/adapt.py`` 407 s eager against
338-340 s compiled (17 % less, though the host was slower in the compiled runs). The U-net's training step is convolution-bound and did not gain (0.151 s
eager against 0.176 s compiled per batch-8 step), so only SemI2I compiles.

The cost is a one-off compilation: ~85 s on 2 cores with a cold cache (the main pair's seed 0 then took
417 s, about what it takes eager), a few seconds once Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``,
by default under the system's temporary folder, per machine) holds the same graphs. ``"auto"`` compiles
trainings of at least :data:`AUTO_MIN_STEPS` steps, where a cold cache costs at most ~30 s more than eager
and a warm one saves ~0.035 s a step; on a CPU only, with a C++ compiler to build the kernels with (on CUDA it
stays eager: not measured yet). Compiling is in place (``nn.Module.compile``): the modules keep their class
and state dict keys, so checkpoints, the weight EMA (copied before compiling) and stylizing are unchanged,
and DDP wraps the compiled module as it would the eager one (checked by hand: two gloo processes, a tiny
model, replicas equal after three steps). The arithmetic is the same to fp32 rounding
(tests/test_compile.py), but fused kernels round differently, so a compiled training is another draw of
the GAN, as bf16 was (docs/adaptation-study.md, "SemI2I compiled by TorchInductor").
"""

from __future__ import annotations

import os
import shutil
from typing import Iterable

import torch
from torch import nn

from semi2i.config import COMPILE_MODES  # never, always, or when it pays (see above)

#: "auto" compiles a training of at least this many steps: a cold compilation (~85 s on 2 cores) against
#: ~0.035 s saved per quick-profile step in the training loop breaks even near 2,400 steps, a warm cache
#: after ~100; at 1,500 a cold cache costs ~30 s more than eager, the quick profile's 2,000 ~15 s.
AUTO_MIN_STEPS = 1500


def _has_cxx_compiler() -> bool:
    """Inductor builds its CPU kernels with a C++ compiler (``$CXX``, else g++, c++ or clang++ on the PATH)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return any(shutil.which(name) for name in names)


def should_compile(mode: str, device: torch.device | str, steps: int) -> bool:
    """Whether ``mode`` compiles a training of ``steps`` steps on ``device``."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "inductor"
    return torch.device(device).type == "cpu" and steps >= AUTO_MIN_STEPS and _has_cxx_compiler()


def compile_in_place(modules: Iterable[nn.Module]) -> None:
    """Compile each module's forward with Inductor, in place (static shapes: a training's patches are one size)."""
    for module in modules:
        module.compile(dynamic=False)
