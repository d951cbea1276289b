"""The arithmetic a network runs in: ``"fp32"``, ``"bf16"`` autocast, or ``"auto"`` (training steps,
stylizers, mapping).

``"auto"`` is decided on the device that runs the network, each time it runs: bf16 where the hardware has
bf16 matrix units (CUDA compute capability >= 8: A100, H100, H200; a CPU with AMX tiles: Intel Xeon since
Sapphire Rapids), fp32 elsewhere. Weights, optimizer states and EMAs are fp32 in every case (see
:mod:`semi2i.training.precision`), so a run that resumes on other hardware only changes the arithmetic of what
it still has to compute. Elsewhere bf16 is emulated or goes through fp32 conversions and runs slower than fp32.

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
    """Whether ``device`` has bf16 matrix units: CUDA compute capability >= 8, or a CPU with AMX tiles."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return _cpu_has_amx()
    return False


@functools.cache
def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch's own dispatch check (oneDNN uses AMX)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
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
