"""What the do-no-harm guard (``unet.finetune_guard: weight_average``) does to finished adapt runs (issue 18).

The guard (:mod:`semi2i.finetune_guard`) maps a method with the average of its fine-tuned and the source U-net's
weights when the label-free score rates the source U-net higher. Runs finished without it hold everything the
decision needs: each method's fine-tuned U-net, the source U-net and both label-free scores (report.json's
``label_free``, computed on the same U-nets and imagery as the guard's). For every method the rule would average
(``--all``: every fine-tuned method, to see what averaging does where the rule keeps the fine-tune), this
averages the two U-nets as the guard does, maps the target as adapt does and scores it.
Results: ``<out>/results.jsonl``, one line per (run, method); a re-run skips what is there.

    python studies/study_finetune_guard.py --runs runs/s53/mild-cb-s0 runs/s53/mild-cb-s1 runs/s53/mild-cb-s2 \\
        --out runs/guard
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from finished_runs import written_rows
from semi2i.checkpoints import load_checkpoint, save_checkpoint
from semi2i.data.store import CityStore
from semi2i.finetune_guard import UNGUARDED, average_weights
from semi2i.mapping import map_region
from semi2i.pipeline import score_maps

log = logging.getLogger("study_finetune_guard")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders (with label-free scores)")
    p.add_argument("--all", action="store_true", help="also average the methods the rule keeps")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = written_rows(results, "run", "method")
    for run in args.runs:
        resolved = yaml.safe_load((run / "config.resolved.yaml").read_text())
        profile = resolved["resolved_profile"]
        report = json.loads((run / "report.json").read_text())["methods"]
        source_score = report["source_only"]["label_free"]
        target = CityStore(run / "stores" / "target.zarr")
        for method, row in report.items():
            if method in UNGUARDED or "label_free" not in row or "miou" not in row or (str(run), method) in done:
                continue
            averaged = row["label_free"] < source_score
            if not (averaged or args.all) or not (run / f"unet_{method}.pt").exists():
                continue
            checkpoint = args.out / f"unet_{run.name}_{method}_average.pt"
            save_checkpoint(checkpoint, average_weights(load_checkpoint(run / "unet_source.pt"),
                                                        load_checkpoint(run / f"unet_{method}.pt")))
            maps = args.out / "maps" / f"{run.name}_{method}_average"
            map_region(target.path, checkpoint, maps, overlap=profile["overlap"], overwrite=True,
                       precision=profile["unet"]["precision"], tf32=profile["unet"]["tf32"])
            s = score_maps(target, maps)
            out = {"run": str(run), "seed": resolved["seed"], "method": method, "guard_averages": averaged,
                   "label_free": row["label_free"], "label_free_source_only": source_score,
                   "miou_fine_tuned": round(row["miou"], 2), "miou_average": round(s["miou"], 2),
                   "miou_source_only": round(report["source_only"]["miou"], 2), "iou_average": s["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(out) + "\n")
            log.info("%s %s: fine-tuned %.2f, average %.2f (source-only %.2f; the guard %s)", run, method,
                     out["miou_fine_tuned"], out["miou_average"], out["miou_source_only"],
                     "averages" if averaged else "keeps the fine-tune")


if __name__ == "__main__":
    main()
