"""The arithmetic a network runs in: ``"fp32"``, ``"bf16"`` autocast, or ``"auto"`` (training steps,
stylizers, mapping).

``"auto"`` is decided on the device that runs the network, each time it runs: bf16 where the hardware has
bf16 arithmetic (CUDA compute capability >= 8: A100, H100, H200; a CPU with AMX tiles, Intel Xeon since
Sapphire Rapids, or with AVX512-BF16 dot products, AMD Zen 4 and later, Intel Cooper Lake), fp32 elsewhere.
Weights, optimizer states and EMAs are fp32 in every case (see :mod:`semi2i.training.precision`), so a run that
resumes on other hardware only changes the arithmetic of what it still has to compute. Elsewhere (AVX2-only
CPUs, older GPUs) bf16 is emulated or goes through fp32 conversions and runs slower than fp32. Measured at 2
threads, bf16 against fp32: on a 2-core Zen 4 EPYC (AVX512-BF16, no AMX; 2026-12-04) a quick SemI2I step 155-164
against 218-220 ms, ColorMapGAN 22-25 against 33-36 ms, a batch-8 U-net step at 128² 146-152 against 285-287 ms,
U-net inference on 4 x 256² 73-74 against 150-154 ms; on the AMX Xeon a whole adaptation ran in 660-702 against
976-1024 s (docs/adaptation-study.md).

Below training and inference so that both run a model the same way (a stylizer in its generator's training
arithmetic) without inference importing training.
"""

from __future__ import annotations

import functools

import torch

from semi2i.config import PRECISIONS


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`semi2i.config.PRECISIONS`, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has bf16 arithmetic: CUDA compute capability >= 8, or a CPU with AMX tiles or AVX512-BF16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return _cpu_has_bf16()
    return False


@functools.cache
def _cpu_has_bf16() -> bool:
    """torch's own dispatch checks (oneDNN's bf16 kernels use AMX tiles or AVX512-BF16 dot products)."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:
            pass
    return False


def resolve_precision(device: torch.device | str, precision: str) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or what ``"auto"`` means on ``device``."""
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device | str, precision: str) -> torch.autocast:
    """The context for forward passes (and losses): bf16 autocast when ``precision`` resolves to ``"bf16"``."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(device, precision) == "bf16")
