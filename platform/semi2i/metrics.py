"""Confusion matrices and IoU scores that merge across shards, workers and windows.

Everything reduces to a plain numpy ``int64`` (C, C) matrix with rows = true class and columns =
predicted class. Matrices from different shards simply add, so scores are exact whatever the split
(a mean of per-shard IoUs would not be). Pixels whose label is ``ignore_index`` never count.

Scores are percentages (0-100). A class absent from both the prediction and the target has an
undefined IoU: it is NaN in :func:`iou_per_class` and left out of :func:`mean_iou` (and ``None``
in the JSON-ready :func:`scores`), so an unseen class neither helps nor hurts the overall score.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
    "scores",
]

IGNORE_INDEX = 255


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 counts, rows = target, columns = prediction; numpy arrays or torch tensors.

    ``pred`` holds class indices with the same shape as ``target``. A target value that is neither
    ignored nor a class index, or a predicted value out of range at a counted pixel, is an error:
    a silently dropped label would make the scores lie.
    """
    if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
        return _confusion_matrix_torch(torch.as_tensor(pred), torch.as_tensor(target), num_classes, ignore_index)
    pred, target = np.asarray(pred), np.asarray(target)
    _check_shapes(pred.shape, target.shape)
    valid = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    t, p = target[valid].astype(np.int64), pred[valid].astype(np.int64)
    _check_range(t, p, num_classes, lambda a: (int(a.min()), int(a.max())) if a.size else (0, 0))
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _confusion_matrix_torch(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index) -> np.ndarray:
    """Count on the tensors' device (no full-size copy to the host), return the small matrix."""
    _check_shapes(tuple(pred.shape), tuple(target.shape))
    pred = pred.to(target.device)
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    t, p = target[valid].long(), pred[valid].long()
    _check_range(t, p, num_classes, lambda a: tuple(torch.aminmax(a)) if a.numel() else (0, 0))
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def _check_shapes(pred_shape, target_shape) -> None:
    if tuple(pred_shape) != tuple(target_shape):
        raise ValueError(f"prediction shape {tuple(pred_shape)} != target shape {tuple(target_shape)}")


def _check_range(t, p, num_classes: int, min_max) -> None:
    for name, values in (("target", t), ("prediction", p)):
        low, high = (int(v) for v in min_max(values))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name} holds class {high if high >= num_classes else low} outside [0, {num_classes}) "
                "at a non-ignored pixel"
            )


def _as_matrix(cm) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got {cm.shape}")
    return cm.astype(np.float64)


def iou_per_class(cm) -> np.ndarray:
    """IoU per class in percent: TP / (TP + FP + FN); NaN for a class absent from target and prediction."""
    cm = _as_matrix(cm)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 100.0 * tp / union, np.nan)


def mean_iou(cm) -> float:
    """Mean of the defined per-class IoUs (percent); NaN if no class is defined (empty matrix)."""
    iou = iou_per_class(cm)
    defined = iou[~np.isnan(iou)]
    return float(defined.mean()) if defined.size else float("nan")


def pixel_accuracy(cm) -> float:
    """Share of counted pixels predicted correctly (percent); NaN for an empty matrix."""
    cm = _as_matrix(cm)
    total = cm.sum()
    return float(100.0 * np.trace(cm) / total) if total > 0 else float("nan")


def scores(cm, class_names: Sequence[str]) -> dict:
    """The report contract ``{"iou": {name: pct}, "miou": pct, "pixel_accuracy": pct}``.

    Undefined values (absent class, empty matrix) are ``None`` so the dict is strict JSON.
    """
    iou = iou_per_class(cm)
    if len(class_names) != len(iou):
        raise ValueError(f"{len(class_names)} class names for a {len(iou)}-class confusion matrix")

    def clean(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    return {
        "iou": {str(name): clean(value) for name, value in zip(class_names, iou)},
        "miou": clean(mean_iou(cm)),
        "pixel_accuracy": clean(pixel_accuracy(cm)),
    }


class ConfusionMatrix:
    """Streaming accumulator: feed batches (logits or labels, torch or numpy), merge, score.

    ``update`` takes logits (N, C, H, W) — reduced by argmax over dim 1 — or labels shaped like the
    target. ``merge`` adds another accumulator (or a raw matrix) from another shard; ``all_reduce``
    sums the matrix across a torch.distributed group (e.g. Ray Train workers) so every rank scores
    the whole validation set.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX, class_names: Sequence[str] | None = None):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred_logits_or_labels, target) -> "ConfusionMatrix":
        pred = pred_logits_or_labels
        if pred.ndim == np.ndim(target) + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"logits have {pred.shape[1]} channels, expected {self.num_classes}")
            pred = pred.argmax(1) if isinstance(pred, torch.Tensor) else np.argmax(pred, axis=1)
        if isinstance(pred, torch.Tensor):
            pred = pred.detach()
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def merge(self, other: "ConfusionMatrix | np.ndarray") -> "ConfusionMatrix":
        matrix = other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge a {matrix.shape} matrix into {self.matrix.shape}")
        self.matrix += matrix.astype(np.int64)
        return self

    def all_reduce(self, group=None) -> "ConfusionMatrix":
        """Sum over all ranks of a torch.distributed group in place (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
            buffer = torch.from_numpy(self.matrix).to(device)
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
            self.matrix = buffer.cpu().numpy().astype(np.int64)
        return self

    def reset(self) -> None:
        self.matrix[:] = 0

    def compute(self) -> dict:
        """Scores in the report format (see :func:`scores`)."""
        return scores(self.matrix, self.class_names)

    @classmethod
    def sum(cls, parts: Iterable["ConfusionMatrix"]) -> "ConfusionMatrix":
        """One accumulator holding the total of several (e.g. per-worker results)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to sum")
        total = cls(parts[0].num_classes, parts[0].ignore_index, parts[0].class_names)
        for part in parts:
            total.merge(part)
        return total
