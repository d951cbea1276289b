"""How much of a method's seed spread is the fine-tune's own sampling noise? (issue 18)

An adapt run's SemI2I row depends on three draws: the source U-net, the generator and the 100-step
fine-tune's patch order. Study runs that kept the first two fixed and changed the third
(``study_style.py``, mild pair: 42.3-44.6 mIoU over 4 sampling seeds) suggest the fine-tune alone moves a
result by a few points. This study measures it on finished ``jobs/adapt.py`` runs: each run's source
U-net is fine-tuned on the run's own stylized source (``--methods``) with the run's fine-tune settings
and the fine-tune seeds ``--finetune-seeds`` (the run's own seed reproduces its report row: a control),
optionally with ``--steps`` steps instead of the profile's, then the target is mapped and scored as adapt
does. So the spread over fine-tune seeds of one run is the fine-tune's share, and the spread of their
means over runs is what the generator and source U-net leave.
Results: ``<out>/results.jsonl``, one line per (run, method, fine-tune seed, steps); a re-run skips what is there.

    python studies/study_finetune_seeds.py --runs runs/s52/reverse-cb-s0 runs/s52/reverse-cb-s1 \\
        --finetune-seeds 0 1 2 100 --out runs/ft-seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from finished_runs import run_config, written_rows
from semi2i.data.store import CityStore
from semi2i.mapping import map_region
from semi2i.pipeline import score_maps
from semi2i.training.distributed import Scaling, fit_unets, unet_job

log = logging.getLogger("study_finetune_seeds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders")
    p.add_argument("--methods", nargs="+", default=["semi2i"], help="stylized sources to fine-tune on")
    p.add_argument("--finetune-seeds", nargs="+", type=int, required=True, help="the fine-tune's sampling seeds")
    p.add_argument("--steps", type=int, help="fine-tune steps (default: the profile's unet.finetune_steps)")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = written_rows(results, "run", "method", "finetune_seed", "steps")
    for run in args.runs:
        cfg = run_config(run)
        unet = cfg.profile.unet
        steps = args.steps or unet.finetune_steps
        todo = [(m, s) for m in args.methods for s in args.finetune_seeds if (str(run), m, s, steps) not in done]
        tag = run.name

        def name(method: str, seed: int) -> str:
            return f"unet_{tag}_{method}_f{seed}_n{steps}.pt"

        jobs = [unet_job(unet, [str((run / "stylized" / m / "store.zarr").resolve())], stage=f"{tag}_{m}_f{s}",
                         output=name(m, s), init=run / "unet_source.pt", steps=steps, overlap=cfg.profile.overlap,
                         seed=s, checkpoint_every=max(1, steps // 2))
                for m, s in todo if not (args.out / name(m, s)).exists()]
        started = time.perf_counter()
        if jobs:
            fit_unets(jobs, args.out, f"ftseeds_{tag}", Scaling(num_workers=1))
        log.info("%s: %d fine-tunes in %.0f s", run, len(jobs), time.perf_counter() - started)
        target = CityStore(run / "stores" / "target.zarr")
        report = json.loads((run / "report.json").read_text())["methods"]
        for method, seed in todo:
            maps = args.out / "maps" / f"{tag}_{method}_f{seed}_n{steps}"
            map_region(target.path, args.out / name(method, seed), maps, overlap=cfg.profile.overlap, overwrite=True)
            s = score_maps(target, maps)
            row = {"run": str(run), "seed": cfg.seed, "method": method, "finetune_seed": seed, "steps": steps,
                   "miou": round(s["miou"], 2), "report_miou": round(report[method]["miou"], 2), "iou": s["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log.info("%s %s fine-tune seed %d, %d steps: mIoU %.2f (run's report: %.2f)", run, method, seed, steps,
                     row["miou"], row["report_miou"])


if __name__ == "__main__":
    main()
