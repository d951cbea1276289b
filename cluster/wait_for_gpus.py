"""Ask the Ray autoscaler for N GPUs and wait until the cluster has them (exit 0), or time out (exit 1).

    python cluster/wait_for_gpus.py 2 --timeout 1200 && python jobs/map_region.py ... --workers 2
    python cluster/wait_for_gpus.py 0      # withdraw the request (a long-lived cluster may scale down again)

Why: jobs/map_region.py sizes its mapping tasks from the GPUs the cluster has *when it starts*. On a
cluster whose GPU workers autoscale from zero that is none, and the mapping would run on CPU tasks
without ever scaling up. This helper turns the need into autoscaler demand
(``ray.autoscaler.sdk.request_resources``) first. Ray Train stages (jobs/adapt.py --gpu) need no help:
their GPU requests are demand by themselves. The request stays in force after this exits (the mapping
job's input ingest may take longer than the autoscaler's idle timeout), until a later call withdraws
it; a RayJob's own cluster is deleted with the job anyway. Joins the cluster of RAY_ADDRESS / the job
submission.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable


def wait_for_gpus(n: int, timeout: float, *, cluster_gpus: Callable[[], float], request: Callable[[int], None],
                  sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                  poll: float = 5.0, log: Callable[[str], None] = print) -> bool:
    """True once ``cluster_gpus() >= n`` (after asking ``request(n)``); False after ``timeout`` seconds.

    ``n <= 0`` withdraws an earlier request (``request(0)``) and returns True at once.
    """
    request(max(0, n))
    if n <= 0:
        log("wait_for_gpus: GPU request withdrawn")
        return True
    start, said = clock(), -1.0
    while True:
        have = cluster_gpus()
        if have >= n:
            log(f"wait_for_gpus: {have:g} GPU(s) in the cluster (asked for {n})")
            return True
        elapsed = clock() - start
        if elapsed >= timeout:
            log(f"wait_for_gpus: only {have:g} of {n} GPU(s) after {timeout:g} s: is the GPU worker group's "
                f"maxReplicas / max_workers at least {n}, and can the cloud provide the nodes?")
            return False
        if have != said:
            log(f"wait_for_gpus: {have:g}/{n} GPU(s), waiting for the autoscaler ({elapsed:.0f} s)")
            said = have
        sleep(min(poll, max(0.0, timeout - elapsed)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gpus", type=int, help="GPUs the cluster must have (one per mapping task at once); 0 withdraws the request")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait (default 1200: node start + image pull)")
    args = p.parse_args(argv)

    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(log_to_driver=False)
    try:
        ok = wait_for_gpus(args.gpus, args.timeout, cluster_gpus=lambda: ray.cluster_resources().get("GPU", 0.0),
                           request=lambda k: request_resources(bundles=[{"GPU": 1}] * k))
    finally:
        ray.shutdown()  # the request lives on in the cluster (GCS), not in this driver
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
