"""Which label-free score should a weight-averaged U-net get? (issues 18 and 19)

Where the fine-tune guard (:mod:`semi2i.finetune_guard`) maps with the average of a fine-tune and the source
U-net, the report could score the average (a) by its own features against its fine-tune's imagery, (b) against
the source imagery, (c) against half of each, or (d) by its fine-tune (what the product does,
:func:`semi2i.label_free.scored_unet`). This prints, over finished adapt runs with the guard, Spearman's ρ
between mIoU and each variant over every (run, method) point, the oracle left out; methods the guard kept
have their one score in every variant.

    python studies/study_averaged_scores.py runs/s54/mild-guard-s0 runs/s54/mild-guard-s1 runs/s54/mild-guard-s2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from semi2i.data.store import CityStore
from semi2i.domain_distance import PATCHES, SCORE_LEVEL, feature_distances, sample_patches
from semi2i.segment import SegmentationModel

VARIANTS = ("own_features", "source_imagery", "both_imageries", "fine_tune")


def scores(run: Path, method: str, fine_tune_score: float) -> dict[str, float]:
    """The four variants' scores of ``method``'s averaged U-net in ``run``."""
    model = SegmentationModel(run / f"unet_{method}.pt")
    size = model.patch_size
    source, stylized = CityStore(run / "stores" / "source.zarr"), CityStore(run / "stylized" / method / "store.zarr")
    target = sample_patches(CityStore(run / "stores" / "target.zarr"), size, PATCHES, 1)

    def score(training: np.ndarray) -> float:
        return -feature_distances(model.model, training, target, model.stats.zscore)[SCORE_LEVEL]

    half = PATCHES // 2
    return {"own_features": score(sample_patches(stylized, size, PATCHES, 0)),
            "source_imagery": score(sample_patches(source, size, PATCHES, 0)),
            "both_imageries": score(np.concatenate([sample_patches(source, size, half, 0),
                                                    sample_patches(stylized, size, half, 100)])),
            "fine_tune": fine_tune_score}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished adapt run folders with unet.finetune_guard")
    args = p.parse_args()
    points: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())
        decisions = report.get("finetune_guard", {})
        for method, row in report["methods"].items():
            if method == "target_oracle" or "miou" not in row:
                continue
            decision = decisions.get(method) or {}
            if decision.get("weight_average"):
                variant_scores = scores(run, method, decision["label_free_fine_tuned"])
            else:
                variant_scores = dict.fromkeys(VARIANTS, row["label_free"])
            print(json.dumps({"run": str(run), "method": method, "miou": round(row["miou"], 2),
                              **{k: round(v, 4) for k, v in variant_scores.items()}}))
            for variant, value in variant_scores.items():
                points[variant].append((row["miou"], value))
    for variant, pts in points.items():
        a = np.array(pts)
        print(f"{variant}: rho {spearmanr(a[:, 0], a[:, 1])[0]:.2f} over {len(pts)} points")


if __name__ == "__main__":
    main()
