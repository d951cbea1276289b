"""Inside a Ray Train worker: its rank, world size and device, DDP wrapping, the collectives the loops
use (all-reduce mean, all-gather, buffer averaging), checkpoints through ``ray.train`` (restore and
report), and the failure injection the fault-tolerance tests use.

Checkpoints go every N steps from rank 0 through ``ray.train.report``; ``FailureConfig`` restarts a lost
worker group from the latest one (:func:`restored_state`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def setup_worker(threads: int) -> tuple[int, int, torch.device]:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(max(1, threads))
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def wrap(module: torch.nn.Module, world: int) -> torch.nn.Module:
    """DDP-wrap for >1 worker. Buffers are not broadcast: every replica computes identical ones
    (instance norm has none; batch-norm running stats differ per shard and are averaged at save)."""
    import ray.train.torch

    if world == 1:
        return module
    return ray.train.torch.prepare_model(module, move_to_device=True, parallel_strategy_kwargs={"broadcast_buffers": False})


def allreduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    reduced = tensor.clone()
    torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM)
    return reduced / torch.distributed.get_world_size()


def average_buffers(module: torch.nn.Module, world: int) -> None:
    """Average floating buffers (batch-norm running statistics) so the saved model sees every shard."""
    if world == 1:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            buf.copy_(allreduce_mean(buf))


def restored_state(name: str) -> dict[str, Any] | None:
    import ray.train

    from semi2i.checkpoints import load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return load_checkpoint(Path(d) / name)


def report_checkpoint(metrics: dict[str, float], rank: int, state_fn: Callable[[], dict], name: str) -> None:
    """Hand Ray a checkpoint (rank 0 builds it; every rank calls, as Ray Train requires) with its metrics.

    Only checkpoints are reported. Nothing reads Ray's copy of the metrics (the loss curves go to
    TensorBoard and the progress log, :class:`~semi2i.training.progress.Progress`), and in Ray 2.60
    (Train V2) a report waits while the previous one is not yet taken by the controller's poll: reports
    seconds apart cost ~5 ms, back-to-back ones up to the poll interval each (1.7 s at Ray's default), which
    is what every-step logging of short runs paid.
    """
    import ray.train

    from semi2i.checkpoints import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            save_checkpoint(Path(d) / name, state_fn())
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def allgather(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    if world == 1:
        return [tensor]
    gathered = [torch.zeros_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(gathered, tensor)
    return gathered


def crash_once(config: dict, step: int) -> None:
    """Failure injection for tests: raise once at a given step (a marker file makes it once)."""
    crash = config.get("crash_at_step")
    if crash is None or step != crash:
        return
    marker = Path(config["run_dir"]) / f".crashed-{config['stage']}-{step}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step}")
