"""Confusion matrices, IoU and the streaming accumulator."""

import json
import math

import numpy as np
import pytest
import torch

from semi2i.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    scores,
)

# Rows = target, columns = prediction. Class 3 appears in neither target nor prediction.
HAND_CM = np.array(
    [
        [8, 1, 1, 0],
        [2, 6, 0, 0],
        [0, 2, 4, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.int64,
)
# By hand:  IoU = TP / (row sum + column sum - TP)
#   class 0: TP 8, row 10, col 8+2+0=10  -> 8 / (10+10-8) = 8/12 = 66.666...%
#   class 1: TP 6, row  8, col 1+6+2=9   -> 6 / (8+9-6)   = 6/11 = 54.5454...%
#   class 2: TP 4, row  6, col 1+0+4=5   -> 4 / (6+5-4)   = 4/7  = 57.142857...%
#   class 3: union 0 -> NaN, excluded from the mean
#   mIoU = (66.6667 + 54.5455 + 57.1429) / 3 = 59.4517%
#   pixel accuracy = trace / total = (8+6+4) / 24 = 75%
HAND_IOU = [800 / 12, 600 / 11, 400 / 7]
HAND_MIOU = sum(HAND_IOU) / 3
NAMES = ["building", "road", "tree", "water"]


def _arrays_from_cm(cm):
    """Flat (pred, target) arrays realising the given confusion matrix."""
    target, pred = [], []
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            target += [t] * int(cm[t, p])
            pred += [p] * int(cm[t, p])
    return np.array(pred), np.array(target)


def test_hand_made_scores():
    iou = iou_per_class(HAND_CM)
    np.testing.assert_allclose(iou[:3], HAND_IOU)
    assert math.isnan(iou[3])
    assert mean_iou(HAND_CM) == pytest.approx(HAND_MIOU)
    assert mean_iou(HAND_CM) == pytest.approx(59.4517, abs=1e-4)
    assert pixel_accuracy(HAND_CM) == pytest.approx(75.0)


def test_confusion_matrix_reproduces_hand_counts_numpy_and_torch():
    pred, target = _arrays_from_cm(HAND_CM)
    rng = np.random.default_rng(0)
    order = rng.permutation(pred.size)
    pred, target = pred[order].reshape(4, 6), target[order].reshape(4, 6)
    cm = confusion_matrix(pred, target, 4)
    assert cm.dtype == np.int64 and cm.shape == (4, 4)
    np.testing.assert_array_equal(cm, HAND_CM)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 4), HAND_CM)


def test_scores_contract_is_strict_json():
    out = scores(HAND_CM, NAMES)
    assert set(out) == {"iou", "miou", "pixel_accuracy"}
    assert list(out["iou"]) == NAMES
    assert out["iou"]["building"] == pytest.approx(HAND_IOU[0])
    assert out["iou"]["water"] is None  # absent class: undefined, not 0
    assert out["miou"] == pytest.approx(HAND_MIOU)
    assert out["pixel_accuracy"] == pytest.approx(75.0)
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError):
        scores(HAND_CM, NAMES[:3])


def test_missed_or_hallucinated_class_scores_zero_not_nan():
    # class 1 only in the target (never predicted), class 2 only predicted (never true).
    cm = np.array([[5, 0, 1], [3, 0, 0], [0, 0, 0]])
    iou = iou_per_class(cm)
    assert iou[1] == 0.0 and iou[2] == 0.0
    assert mean_iou(cm) == pytest.approx((5 / 9 * 100 + 0 + 0) / 3)


def test_empty_matrix_is_nan_not_an_error():
    cm = np.zeros((3, 3), np.int64)
    assert math.isnan(mean_iou(cm)) and math.isnan(pixel_accuracy(cm))
    assert scores(cm, ["a", "b", "c"]) == {"iou": {"a": None, "b": None, "c": None}, "miou": None, "pixel_accuracy": None}


def test_ignore_pixels_never_count():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, size=(2, 16, 16))
    target[rng.random(target.shape) < 0.3] = 255
    pred = rng.integers(0, 3, size=target.shape)
    base = confusion_matrix(pred, target, 3)
    assert base.sum() == int((target != 255).sum())
    changed = pred.copy()
    ignored = target == 255
    changed[ignored] = (changed[ignored] + 1) % 3
    np.testing.assert_array_equal(confusion_matrix(changed, target, 3), base)
    changed[ignored] = 99  # even out-of-range predictions at ignored pixels are harmless
    np.testing.assert_array_equal(confusion_matrix(changed, target, 3), base)


def test_invalid_labels_are_errors():
    target = np.array([[0, 1], [2, 4]])
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(np.zeros_like(target), target, 3)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 1], [2, 3]]), 3)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.array([[0, 5]]), np.array([[0, 1]]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)


def test_halves_add_up_to_the_whole():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 5, size=(3, 20, 24))
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, 5, size=target.shape)
    whole = confusion_matrix(pred, target, 5)
    top = confusion_matrix(pred[:, :10], target[:, :10], 5)
    bottom = confusion_matrix(pred[:, 10:], target[:, 10:], 5)
    np.testing.assert_array_equal(top + bottom, whole)


def test_accumulator_takes_logits_or_labels_and_merges():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 8, 8, generator=gen)
    target = torch.randint(0, 3, (4, 8, 8), generator=gen)
    target[:, 0] = 255
    expected = confusion_matrix(logits.argmax(1), target, 3)

    a = ConfusionMatrix(3, class_names=["a", "b", "c"]).update(logits[:2], target[:2])
    b = ConfusionMatrix(3, class_names=["a", "b", "c"]).update(logits[2:].argmax(1).numpy(), target[2:].numpy())
    np.testing.assert_array_equal(a.merge(b).matrix, expected)
    np.testing.assert_array_equal(ConfusionMatrix.sum([ConfusionMatrix(3).merge(expected)] * 2).matrix, 2 * expected)
    assert a.compute() == scores(expected, ["a", "b", "c"])
    a.reset()
    assert a.matrix.sum() == 0
    with pytest.raises(ValueError):
        ConfusionMatrix(4).update(logits, target)  # 3 logit channels for 4 classes
