"""Rank 0's progress of a Ray Train loop: log lines with rates and ETA, plus TensorBoard scalars."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class Progress:
    """Rank 0's log lines with rates and ETA, plus TensorBoard scalars."""

    def __init__(self, name: str, run_dir: Path, rank: int, total: int, start: int, units: str, per_step: int):
        self.name, self.rank, self.total, self.start, self.units, self.per_step = name, rank, total, start, units, per_step
        self.t0 = time.perf_counter()
        self.writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard" / name))

    def rate(self, step: int) -> float:
        return (step - self.start) * self.per_step / max(time.perf_counter() - self.t0, 1e-9)

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{self.name}/{key}", value, step)
        rate = self.rate(step)
        eta = (self.total - step) * self.per_step / max(rate, 1e-9)
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in {"step"})
        log.info("%s step %d/%d %s | %.2f %s/s, ETA %s", self.name, step, self.total, shown, rate, self.units, _eta(eta))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
