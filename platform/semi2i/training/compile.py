"""Compiling SemI2I's training networks with TorchInductor (``semi2i.compile``).

Why: a quick-profile SemI2I step is ~60 % convolutions and ~40 % small element-wise work (instance norms,
reflection pads, ReLUs, the bf16 casts autocast makes at every op, AdaIN), each a separate pass over
memory in eager PyTorch. Inductor fuses that work into a few generated C++ loops. Measured at 2 threads
on a 2-core Zen 4 EPYC in bf16 (2026-12-05, ``benchmarks/bench_semi2i.py --backends eager inductor``):
see the README. The U-net's training step is convolution-bound and did not gain (0.151 s eager against
0.176 s compiled per batch-8 step), so only SemI2I compiles.

The cost is a one-off compilation: ~80-90 s on 2 cores with a cold cache, a few seconds once Inductor's
on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temporary folder, per machine)
holds the same graphs. ``"auto"`` therefore compiles only trainings long enough to pay for a cold cache
(:data:`AUTO_MIN_STEPS`), on a CPU, with a C++ compiler to build the kernels with; on CUDA it stays eager
(not measured yet). Compiling is in place (``nn.Module.compile``): the modules keep their class and state
dict keys, so checkpoints, the weight EMA (copied before compiling) and stylizing are unchanged, and DDP
wraps the compiled module as it would the eager one.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Iterable

import torch
from torch import nn

from semi2i.config import COMPILE_MODES  # never, always, or when it pays (see above)

log = logging.getLogger(__name__)

#: "auto" compiles a training of at least this many steps: a cold compilation (~85 s on 2 cores) against
#: ~0.045 s saved per quick-profile step breaks even near 1,900 steps, a warm cache after ~100.
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
