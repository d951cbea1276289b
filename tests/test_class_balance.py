"""Class-balanced cross-entropy for the U-net (``unet.class_balance``): the weights by hand, from a store's
windows, and in the training step's loss."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semi2i.config import ConfigError, UNetTrainConfig, load_profile
from semi2i.data.ingest import ingest_city
from semi2i.data.patches import city_windows
from semi2i.models.unet import UNet
from semi2i.training.class_balance import MAX_WEIGHT, balanced_weights, training_class_weights
from semi2i.training.unet_step import UNetStep


def test_weights_by_hand():
    # frequencies 0.6 / 0.3 / 0.1 / 0: alpha 1 gives 1/f scaled to a pixel-weighted mean of 1, so each present class
    # carries a third of the loss; the absent class gets 0
    assert balanced_weights([60, 30, 10, 0], 1.0) == pytest.approx([5 / 9, 10 / 9, 10 / 3, 0.0])
    root = np.array([0.6, 0.3, 0.1]) ** -0.5
    assert balanced_weights([6, 3, 1], 0.5) == pytest.approx(list(root / (np.array([0.6, 0.3, 0.1]) @ root)))
    assert balanced_weights([6, 3, 1], 0.0) is None and balanced_weights([0, 0], 1.0) is None


def test_weights_are_capped_and_keep_a_mean_of_one():
    # 99 % / 0.9 % / 0.1 %: 1/f would give the rare classes 37 and 333; both are capped and the common class
    # takes what keeps the mean at 1: (1 - 0.009 * 10 - 0.001 * 10) / 0.99
    weights = balanced_weights([990, 9, 1], 1.0)
    assert weights == pytest.approx([0.9 / 0.99, MAX_WEIGHT, MAX_WEIGHT])
    assert np.array([0.99, 0.009, 0.001]) @ np.array(weights) == pytest.approx(1.0)
    # two rounds: 0.5 % is capped first; the rescale then lifts 2.5 % over the cap too, and the two uncapped classes
    # share the rest (0.7) in their 1/f ratio, 0.35 each
    weights = balanced_weights([900, 70, 25, 5], 1.0)
    assert weights == pytest.approx([0.35 / 0.9, 0.35 / 0.07, MAX_WEIGHT, MAX_WEIGHT])


def test_weights_from_the_training_windows(tmp_path, write):
    img = np.full((3, 64, 96), 100, np.uint8)
    lbl = np.zeros((64, 96), np.uint8)
    lbl[:, 64:] = 1  # class b is the right third
    write(tmp_path / "img" / "a.tif", img)
    write(tmp_path / "lbl" / "a.tif", lbl)
    store = ingest_city(str(tmp_path / "img/*.tif"), tmp_path / "c.zarr", labels=str(tmp_path / "lbl/*.tif"),
                        classes=["a", "b"], min_size=32)
    windows = city_windows(store, size=32, overlap=0)
    # a: 2/3 of the pixels, b: 1/3; each class half the loss: 0.5 / (2/3) and 0.5 / (1/3)
    assert training_class_weights(windows, 2, 1.0) == pytest.approx([0.75, 1.5])
    assert training_class_weights(windows, 2, 0.0) is None


def test_the_step_weights_its_cross_entropy():
    torch.manual_seed(0)
    model = UNet(1, 3, base_width=8, depth=2)
    images = torch.randn(2, 1, 32, 32)
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[:, :4] = 255  # ignored pixels stay out of the loss and its normaliser
    weights = [0.5, 1.0, 2.0]
    before = copy.deepcopy(model)
    out = UNetStep(model, lr=1e-3, class_weights=weights).step(images, labels)
    before.train()
    expected = F.cross_entropy(before(images), labels, weight=torch.tensor(weights), ignore_index=255)
    assert out["loss"] == pytest.approx(float(expected.detach()), rel=1e-5)
    # by hand: the weighted mean of the per-pixel losses over the labelled pixels
    per_pixel = F.cross_entropy(before(images), labels, ignore_index=255, reduction="none")
    valid = labels != 255
    w = torch.tensor(weights)[labels[valid]]
    assert out["loss"] == pytest.approx(float((per_pixel[valid] * w).sum().detach() / w.sum()), rel=1e-5)
    plain = copy.deepcopy(before)
    assert UNetStep(plain, lr=1e-3, class_weights=[1.0, 1.0, 1.0]).step(images, labels)["loss"] == pytest.approx(
        UNetStep(copy.deepcopy(before), lr=1e-3).step(images, labels)["loss"], rel=1e-6)


def test_config_refuses_a_balance_outside_zero_one():
    with pytest.raises(ConfigError, match=r"unet\.class_balance: must be in \[0, 1\], got 1\.5"):
        load_profile("quick", {"unet.class_balance": 1.5})
    assert UNetTrainConfig().class_balance == 0.0  # the paper's plain cross-entropy
    assert load_profile("paper").unet.class_balance == 0.0
