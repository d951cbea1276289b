"""Deep Embedded Validation of each method of an adapt run (issue 19: a label-free score that is not a vote).

DEV (You et al., ICML 2019) estimates a model's *target* risk from labelled data of its training domain:
the per-patch loss on labelled training patches, weighted by the density ratio p_target(x) / p_train(x)
of each patch's features (from a domain classifier), with a control variate that cancels the ratio's
noise. Here, for every method of a finished adapt run (its fine-tuned U-net and the imagery it was
trained on: the source for ``source_only``, the method's stylized source with the source labels
otherwise):

1. 96 labelled patches of the training imagery and 96 of the target (random places, the same for
   every method of the run), each at the U-net's patch size;
2. features: the U-net's deepest encoder level, mean-pooled per patch; a logistic-regression domain
   classifier (L2, cross-fitted on two folds, so no patch is scored by a classifier that saw it) gives
   each training patch p(target | x) and the ratio w = n_train / n_target · p / (1 − p);
3. loss: the U-net's cross-entropy on each labelled training patch (valid pixels only);
4. DEV risk = mean(w·ℓ) − η·(mean(w) − 1), η = −cov(w·ℓ, w) / var(w); score = −risk.

The plain (unweighted) training-domain loss is reported beside it as a control, with each method's mIoU
from the run's report.json and the Spearman ρ over the run's methods (the oracle excluded: it saw the
target's labels).

    python studies/study_dev.py runs/s18/reverse-s2 runs/s18/mild-s0 --out runs/dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from semi2i.data.store import CityStore
from semi2i.segment import SegmentationModel

PATCHES = 96


def sample(store: CityStore, size: int, count: int, seed: int, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(count, bands, size, size) patches (and their labels) at random places, rasters drawn by area."""
    rasters = [r for r in store.rasters if r.height >= size and r.width >= size]
    rng = np.random.default_rng(seed)
    area = np.array([r.height * r.width for r in rasters], np.float64)
    images, targets = [], []
    for _ in range(count):
        r = rasters[rng.choice(len(rasters), p=area / area.sum())]
        y, x = int(rng.integers(0, r.height - size + 1)), int(rng.integers(0, r.width - size + 1))
        image, label = store.read_window(r.id, y, x, size, size)
        images.append(image)
        targets.append(label)
    return np.stack(images), (np.stack(targets) if labels else None)


@torch.no_grad()
def deep_features_and_logits(model: SegmentationModel, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean of the deepest encoder level (n, C) and the logits (n, classes, h, w)."""
    x = torch.from_numpy(np.stack([model.stats.zscore(i) for i in images]))
    net = model.model
    h = x
    for i, block in enumerate(net.down):
        h = block(h if i == 0 else net.pool(h))
    return h.mean(dim=(2, 3)).double(), net(x)


def domain_probabilities(train: torch.Tensor, target: torch.Tensor, l2: float = 1e-2, seed: int = 0) -> torch.Tensor:
    """Cross-fitted p(target | x) of each training row: logistic regression on standardised features, two folds."""
    x = torch.cat([train, target])
    y = torch.cat([torch.zeros(len(train)), torch.ones(len(target))]).double()
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
    folds = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)) % 2)
    p = torch.empty(len(x), dtype=torch.float64)
    for k in (0, 1):
        fit, held = folds != k, folds == k
        w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            z = x[fit] @ w[:-1] + w[-1]
            loss = F.binary_cross_entropy_with_logits(z, y[fit]) + l2 * (w[:-1] ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            p[held] = torch.sigmoid(x[held] @ w[:-1] + w[-1])
    return p[: len(train)]


def dev_risk(loss: torch.Tensor, weight: torch.Tensor) -> float:
    """DEV's control-variate estimate of the target risk from per-sample losses and density ratios."""
    wl = weight * loss
    var = weight.var()
    eta = -torch.cov(torch.stack([wl, weight]))[0, 1] / var if var > 0 else torch.tensor(0.0)
    return float(wl.mean() + eta * (weight.mean() - 1))


def score_run(run: Path) -> list[dict]:
    report = json.loads((run / "report.json").read_text())["methods"]
    target = CityStore(run / "stores" / "target.zarr")
    rows = []
    for method, result in report.items():
        if method == "target_oracle" or "miou" not in result:
            continue
        ckpt = run / ("unet_source.pt" if method == "source_only" else f"unet_{method}.pt")
        store_path = run / ("stores/source.zarr" if method == "source_only" else f"stylized/{method}/store.zarr")
        if not ckpt.exists() or not store_path.exists():
            continue
        model = SegmentationModel(ckpt)
        training = CityStore(store_path)
        images, labels = sample(training, model.patch_size, PATCHES, seed=0, labels=True)
        target_images, _ = sample(target, model.patch_size, PATCHES, seed=1, labels=False)
        f_train, logits = deep_features_and_logits(model, images)
        f_target, _ = deep_features_and_logits(model, target_images)
        y = torch.from_numpy(labels.astype(np.int64))
        pixel_loss = F.cross_entropy(logits, y, ignore_index=model.ignore_index, reduction="none")
        valid = (y != model.ignore_index).double()
        loss = (pixel_loss.double() * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp_min(1)
        p = domain_probabilities(f_train, f_target)
        weight = (p / (1 - p).clamp_min(1e-6)) * (len(f_train) / len(f_target))
        risk = dev_risk(loss, weight)
        rows.append({"run": str(run), "method": method, "miou": round(result["miou"], 2),
                     "label_free_deep": result.get("label_free"), "dev": round(-risk, 4),
                     "train_loss": round(-float(loss.mean()), 4), "mean_p_target": round(float(p.mean()), 3),
                     "mean_weight": round(float(weight.mean()), 3)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished adapt run folders")
    p.add_argument("--out", type=Path, help="folder for results.jsonl")
    args = p.parse_args()
    torch.manual_seed(0)
    every = []
    for run in args.runs:
        rows = score_run(run)
        every += rows
        for r in rows:
            print(json.dumps(r))
        miou = [r["miou"] for r in rows]
        for key in ("dev", "train_loss", "label_free_deep"):
            values = [r[key] for r in rows]
            best = rows[int(np.argmax(values))]
            print(f"# {run}: {key}: rho {spearmanr(values, miou).statistic:.2f} over {len(rows)}, "
                  f"picks {best['method']} (loses {max(miou) - best['miou']:.1f})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with (args.out / "results.jsonl").open("a") as f:
            for r in every:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
