"""What the do-no-harm guard (``unet.finetune_guard: weight_average``) does to finished adapt runs (issue 18).

The guard (:mod:`semi2i.finetune_guard`) maps a method with the average of its fine-tuned and the source U-net's
weights when the label-free score rates the source U-net higher. Runs finished without it hold everything the
decision needs: each method's fine-tuned U-net, the source U-net and both label-free scores (report.json's
``label_free``, computed on the same U-nets and imagery as the guard's). For every method the rule would average
(``--all``: every fine-tuned method, to see what averaging does where the rule keeps the fine-tune), this
averages the two U-nets as the guard does, maps the target as adapt does and scores it. A run made with the
guard already holds the averages: there the kept fine-tune (``guard/unet_<method>.pt``) is mapped instead, so
every row has both.
Results: ``<out>/results.jsonl``, one line per (run, method); a re-run skips what is there. Its ``guard_averages``
is the rule as it was until 2026-12-06 (report.json's scores compared); the test over draws that replaced it is
set beside it by ``study_score_samples.py --guard``.

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
from semi2i.finetune_guard import UNGUARDED, average_weights, fell_back, maps_with
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
        report = json.loads((run / "report.json").read_text())
        rows, guarded = report["methods"], report.get("finetune_guard", {})
        source_score = rows["source_only"]["label_free"]
        target = CityStore(run / "stores" / "target.zarr")

        def mapped(checkpoint: Path, name: str) -> dict:
            maps = args.out / "maps" / f"{run.name}_{name}"
            map_region(target.path, checkpoint, maps, overlap=profile["overlap"], overwrite=True,
                       precision=profile["unet"]["precision"], tf32=profile["unet"]["tf32"])
            return score_maps(target, maps)

        for method, row in rows.items():
            if method in UNGUARDED or "label_free" not in row or "miou" not in row or (str(run), method) in done:
                continue
            averaged = row["label_free"] < source_score  # row["label_free"] is the fine-tune's score, guarded or not
            # a run made with the guard keeps the fine-tune of a method that fell back in guard/ and reports the
            # average (unet.finetune_guard: weight_average) or the source U-net's map (source_unet) instead
            record = guarded.get(method)
            in_run = fell_back(record) and maps_with(record) == "weight_average"
            fine_tune = run / "guard" / f"unet_{method}.pt" if fell_back(record) else run / f"unet_{method}.pt"
            if not (averaged or args.all) or not fine_tune.exists():
                continue
            if in_run:
                fine_tuned, average = mapped(fine_tune, f"{method}_fine_tune"), {"miou": row["miou"], "iou": row["iou"]}
            else:
                checkpoint = args.out / f"unet_{run.name}_{method}_average.pt"
                save_checkpoint(checkpoint, average_weights(load_checkpoint(run / "unet_source.pt"), load_checkpoint(fine_tune)))
                average = mapped(checkpoint, f"{method}_average")
                fine_tuned = mapped(fine_tune, f"{method}_fine_tune") if fell_back(record) else row  # row: the source U-net's map
            out = {"run": str(run), "seed": resolved["seed"], "method": method, "guard_averages": averaged,
                   "label_free": row["label_free"], "label_free_source_only": source_score,
                   "miou_fine_tuned": round(fine_tuned["miou"], 2), "miou_average": round(average["miou"], 2),
                   "miou_source_only": round(rows["source_only"]["miou"], 2), "iou_average": average["iou"]}
            with results.open("a") as f:
                f.write(json.dumps(out) + "\n")
            log.info("%s %s: fine-tuned %.2f, average %.2f (source-only %.2f; the guard %s)", run, method,
                     out["miou_fine_tuned"], out["miou_average"], out["miou_source_only"],
                     "averages" if averaged else "keeps the fine-tune")

if __name__ == "__main__":
    main()
