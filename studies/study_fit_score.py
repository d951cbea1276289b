"""Does the label-free score miss what a stylization destroyed? Two more label-free terms, measured on finished runs.

The shipped score (:mod:`semi2i.domain_distance`) is −(distance between a U-net's training imagery and the target
in its own deep features), the divergence term of Ben-David et al.'s bound. The bound's other terms are the
U-net's error on its own training imagery and the error of the best joint labelling: both grow when a stylization
paints one class with another's look (the labels stay the source's, the pixels no longer show them), and the
distance cannot see that. Per (run, method), from the run's own files and without a target label:

- ``fit``: the method's fine-tuned U-net (the one the score rates, :func:`semi2i.label_free.scored_unet`) on
  patches of its training imagery against their labels: mIoU and balanced accuracy (mean per-class recall); and the
  source U-net on the same patches (does the stylized imagery still show the source's content to a model that
  knows the source? CyCADA's semantic consistency, Hoffman et al. 2018);
- ``shares``: the classes it predicts on target patches, against the class shares of its training labels and
  against the source U-net's predictions on the same target patches (total variation, half the L1 distance).

Each row also has the run's target mIoU (report.json) for the study's Spearman ρ, which reads nothing else of
the target labels. Rows: ``<out>`` (JSON lines); a re-run skips the (run, method) rows already there.

    python studies/study_fit_score.py --runs runs/s55/control-s0 runs/s55/mild-s0 --out runs/s55/fit.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from finished_runs import written_rows
from semi2i.data.store import CityStore
from semi2i.domain_distance import sample_labelled_patches
from semi2i.finetune_guard import fell_back
from semi2i.segment import SegmentationModel

log = logging.getLogger("study_fit_score")
SKIP = ("target_oracle",)


@torch.no_grad()
def predict(model: SegmentationModel, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.stack([model.stats.zscore(i) for i in images]).astype(np.float32))
    model.model.eval()
    return torch.cat([model.model(b).argmax(1) for b in x.split(8)]).numpy()


def confusion(pred: np.ndarray, label: np.ndarray, classes: int, ignore: int) -> np.ndarray:
    keep = label != ignore
    return np.bincount(label[keep].astype(np.int64) * classes + pred[keep], minlength=classes * classes).reshape(classes, classes)


def fit(cm: np.ndarray) -> dict:
    """mIoU and balanced accuracy of a confusion matrix (rows: labels), over the classes present in the labels."""
    present = cm.sum(1) > 0
    tp = np.diag(cm)
    iou = tp / np.maximum(cm.sum(0) + cm.sum(1) - tp, 1)
    recall = tp / np.maximum(cm.sum(1), 1)
    return {"miou": float(iou[present].mean()), "balanced_accuracy": float(recall[present].mean()),
            "recall": [round(float(v), 4) for v in recall]}


def shares(values: np.ndarray, classes: int, ignore: int | None = None) -> np.ndarray:
    v = values[values != ignore] if ignore is not None else values.ravel()
    return np.bincount(v.astype(np.int64), minlength=classes)[:classes] / max(v.size, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished adapt run folders")
    p.add_argument("--out", required=True, type=Path, help="rows (JSON lines)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = written_rows(args.out, "run", "method")
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())
        rows, guarded = report["methods"], report.get("finetune_guard", {})
        target = CityStore(run / "stores" / "target.zarr")
        source_unet = SegmentationModel(run / "unet_source.pt")
        size, classes, ignore = source_unet.patch_size, source_unet.num_classes, source_unet.ignore_index
        target_images, _ = sample_labelled_patches(target, size, seed=1)  # the score's target patches (seed + 1)
        source_on_target = shares(predict(source_unet, target_images), classes)
        for method, row in rows.items():
            if method in SKIP or (str(run), method) in done or "miou" not in row:
                continue
            if method == "source_only":
                unet, training = run / "unet_source.pt", run / "stores" / "source.zarr"
            else:
                kept = run / "guard" / f"unet_{method}.pt"
                unet = kept if kept.exists() else run / f"unet_{method}.pt"
                training = run / "stylized" / method / "store.zarr"
            if not unet.exists() or not training.exists():
                continue
            model = SegmentationModel(unet)
            images, labels = sample_labelled_patches(CityStore(training), size)
            train_fit = fit(confusion(predict(model, images), labels, classes, ignore))
            # the source U-net on the same patches: does the stylized imagery still show the source's content to a
            # model that knows the source (CyCADA's semantic consistency, Hoffman et al. 2018)?
            source_fit = fit(confusion(predict(source_unet, images), labels, classes, ignore))
            on_target = shares(predict(model, target_images), classes)
            label_shares = shares(labels, classes, ignore)
            out = {"run": str(run), "seed": report.get("seed"), "method": method, "miou": row["miou"],
                   "label_free": row.get("label_free"),
                   "guard_averaged": fell_back(guarded.get(method)),  # mapped with a fallback, not the fine-tune
                   "fit_miou": round(train_fit["miou"], 4), "fit_balanced_accuracy": round(train_fit["balanced_accuracy"], 4),
                   "fit_recall": train_fit["recall"],
                   "source_unet_fit_miou": round(source_fit["miou"], 4), "source_unet_fit_recall": source_fit["recall"],
                   "target_shares": [round(float(v), 4) for v in on_target],
                   "training_label_shares": [round(float(v), 4) for v in label_shares],
                   "source_unet_target_shares": [round(float(v), 4) for v in source_on_target],
                   "tv_to_training_labels": round(0.5 * float(np.abs(on_target - label_shares).sum()), 4),
                   "tv_to_source_unet": round(0.5 * float(np.abs(on_target - source_on_target).sum()), 4)}
            with args.out.open("a") as f:
                f.write(json.dumps(out) + "\n")
            log.info("%s %s: mIoU %.2f, label-free %s, fit mIoU %.3f (source U-net %.3f), balanced acc %.3f, TV %.3f / %.3f",
                     run.name, method, out["miou"], out["label_free"], out["fit_miou"], out["source_unet_fit_miou"],
                     out["fit_balanced_accuracy"],
                     out["tv_to_training_labels"], out["tv_to_source_unet"])


if __name__ == "__main__":
    main()
