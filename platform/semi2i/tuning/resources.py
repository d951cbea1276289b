"""What one trial needs at once (its driver + its Ray Train workers) and how many trials fit the Ray
cluster without deadlock (:func:`plan_concurrency`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


class ResourceError(RuntimeError):
    """The requested trial resources can never be granted by this Ray cluster (fails before any trial)."""


@dataclass(frozen=True)
class TrialResources:
    driver_cpus: float
    workers: int
    use_gpu: bool
    driver_gpus: float = 0.0

    @property
    def cpus(self) -> float:  # driver + Ray Train workers (1 CPU each on CPU, none on GPU: see _fit)
        return self.driver_cpus + (0 if self.use_gpu else self.workers)

    @property
    def gpus(self) -> float:
        return self.driver_gpus + (self.workers if self.use_gpu else 0)


def plan_concurrency(res: TrialResources, cluster: Mapping[str, float], requested: int | None = None) -> int:
    """How many trials may run at once without deadlock; raises :class:`ResourceError` when the request
    can never be satisfied. The Train workers of a trial are scheduled *after* its driver holds its
    CPUs, so every running trial must be able to hold driver + workers at the same time."""
    cpu, gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    need = (f"{res.driver_cpus:g} driver CPU{f' + {res.driver_gpus:g} driver GPU' if res.driver_gpus else ''} + "
            f"{res.workers} worker(s) x {'1 GPU' if res.use_gpu else '1 CPU'}")
    if res.cpus > cpu + 1e-9 or res.gpus > gpu + 1e-9:
        raise ResourceError(
            f"one trial needs {res.cpus:g} CPU and {res.gpus:g} GPU ({need}) but the Ray cluster has {cpu:g} CPU and "
            f"{gpu:g} GPU: lower --workers or --driver-cpus "
            f"(e.g. on {cpu:g} CPUs: workers <= {max(0, int(cpu - res.driver_cpus))})")
    fits = [int(cpu // res.cpus + 1e-9)] if res.cpus > 0 else []
    if res.gpus:
        fits.append(int(gpu // res.gpus + 1e-9))
    most = max(1, min(fits)) if fits else 1
    if requested is not None and requested > most:
        raise ResourceError(
            f"{requested} concurrent trials need {requested * res.cpus:g} CPU and {requested * res.gpus:g} GPU ({need} each) "
            f"but the Ray cluster has {cpu:g} CPU and {gpu:g} GPU: at most {most} fit at once (more would deadlock)")
    return requested or most
