"""The U-net training step (paper: Adam, lr 1e-4, cross-entropy), with resumable state.

``UNetStep`` is a plain object so the same code runs in a test, in a single-process loop and inside
a Ray Train worker: there the model arrives wrapped in ``DistributedDataParallel`` and gradients are
averaged by DDP's backward hooks; nothing here needs to know. Checkpoints always hold the *unwrapped*
model's state, so they load into a bare model for mapping, or into a DDP-wrapped one to resume.

Inputs are z-scored float tensors from the data layer; the model does no normalisation itself.
``precision="bf16"`` runs the forward pass and the loss under bf16 autocast; the weights and Adam stay
fp32, so checkpoints do not depend on it (:mod:`semi2i.training.precision`).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import IGNORE_INDEX, ConfusionMatrix
from .ddp import unwrap
from .precision import autocast, use_tf32

__all__ = ["UNetStep", "evaluate", "predict_logits", "unwrap"]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _is_channels_last(model: nn.Module) -> bool:
    """True if conv weights were converted with ``to(memory_format=torch.channels_last)``."""
    return any(
        p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
        for p in model.parameters()
    )


class UNetStep:
    """One optimisation step of the U-net on a batch; owns the optimizer and the step counter."""

    def __init__(self, model: nn.Module, lr: float = 1e-4, ignore_index: int = IGNORE_INDEX, *,
                 precision: str = "fp32", tf32: bool = False, class_weights: Sequence[float] | None = None):
        self.model = model
        self.ignore_index = ignore_index
        # per-class loss weights (semi2i.training.class_balance); None: plain cross-entropy
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32,
                                                                             device=_device_of(model))
        self.precision = precision
        autocast(_device_of(model), precision)  # refuses an unknown precision here, not at the first step
        use_tf32(tf32, _device_of(model))
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.iteration = 0  # optimizer steps taken; part of the saved state

    def set_learning_rate(self, lr: float) -> None:
        """Use ``lr`` from the next update on (schedules are functions of ``iteration``; see training.schedule)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Forward, cross-entropy (ignore pixels excluded, weighted per class if set), backward, Adam update.

        Returns ``loss`` and ``pixel_acc`` (percent of non-ignored pixels, this batch, before the
        update) as Python floats, and ``step`` (the counter after the update).
        """
        device = _device_of(self.model)
        images = images.to(device, non_blocking=True)
        if _is_channels_last(self.model):  # the batch in the weights' layout (UNetTrainConfig.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True).long()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        valid = labels != self.ignore_index
        with autocast(device, self.precision):
            logits = self.model(images)
            if bool(valid.any()):
                loss = F.cross_entropy(logits, labels, weight=self.class_weights, ignore_index=self.ignore_index)
            else:
                # An all-ignore batch must not produce a NaN loss, and under DDP every rank must still run
                # backward (the gradient all-reduce is collective): a zero loss keeps the graph connected.
                loss = logits.sum() * 0.0
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        with torch.no_grad():
            correct = ((logits.argmax(1) == labels) & valid).sum()
            count = valid.sum()
            pixel_acc = float(100.0 * correct / count) if int(count) > 0 else float("nan")
        return {"loss": float(loss.detach()), "pixel_acc": pixel_acc, "step": self.iteration}

    # --- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Model (unwrapped), optimizer and step counter: everything needed to resume exactly."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.iteration,
        }

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["step"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the training state atomically (a crash mid-write never leaves a torn checkpoint)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore a state written by :meth:`save`; tensors land on the model's device."""
        state = torch.load(os.fspath(path), map_location=_device_of(self.model), weights_only=True)
        self.load_state_dict(state)


def predict_logits(model: nn.Module, image_tensor: torch.Tensor) -> torch.Tensor:
    """Logits for (C, H, W) or (N, C, H, W) input, shaped (K, H, W) or (N, K, H, W), on the input's device.

    Runs in eval mode under no_grad and restores the model's previous mode afterwards, so it can be
    called for validation in the middle of training. If the model's weights are channels_last (see
    ``UNet.prepare_for_inference``) the input is converted to match.
    """
    model = unwrap(model)  # DDP's forward would broadcast buffers: a collective call inference must avoid
    single = image_tensor.ndim == 3
    x = image_tensor.unsqueeze(0) if single else image_tensor
    first = next(model.parameters())
    x = x.to(first.device, dtype=first.dtype)
    if _is_channels_last(model):
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        model.train(was_training)
    logits = logits.to(image_tensor.device)
    return logits[0] if single else logits


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Confusion matrix (C, C) int64 over ``(images, labels)`` batches; add matrices across shards."""
    acc = ConfusionMatrix(num_classes, ignore_index)
    device = _device_of(model)
    for images, labels in batches:
        logits = predict_logits(model, images.to(device))
        acc.update(logits.argmax(1), torch.as_tensor(labels).to(device))
    return acc.matrix
