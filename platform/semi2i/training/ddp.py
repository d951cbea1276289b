"""The step classes take their networks plain or wrapped in DistributedDataParallel (Ray Train); this is
how they reach the network inside (state dicts, EMA copies, collective-free inference)."""

from __future__ import annotations

from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel/DataParallel, or the module itself."""
    return module.module if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else module
