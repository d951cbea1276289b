"""The small protocol every image-translation GAN step follows (SemI2I, ColorMapGAN, CycleGAN), so one
Ray Train loop (:func:`semi2i.training.gan_loop.gan_worker_loop`) drives any of them.

A step object holds its networks (possibly DDP-wrapped), optimizers and counters, and provides:

* ``train_step(a, b)``: one update on a batch per domain (A = source, B = target, [-1, 1]) → losses
  as floats (and the learning rate(s));
* ``set_epoch(epoch)``: enter an epoch (learning-rate schedule); ``step``/``epoch`` counters;
* ``state_dict()``/``load_state_dict()``: the whole training state in plain types (weights_only
  loadable). Under DDP the loop calls ``state_dict`` on *every* rank at checkpoints, so a step may
  use collectives there (CycleGAN gathers its per-rank image pools);
* ``stylize(image)``: test time, A's content in B's style, any H×W, deterministic;
* ``preview_images(a, b)``: the tensors of the preview PNG row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from torch import Tensor


class GANStep(Protocol):
    cfg: Any
    step: int
    epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def train_step(self, a: Tensor, b: Tensor) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def stylize(self, image: Tensor) -> Tensor: ...

    def preview_images(self, a: Tensor, b: Tensor) -> list[Tensor]: ...


def save_preview_row(images: list[Tensor], path: Path) -> Path:
    """First image of each (N, C, H, W) tensor, side by side, as an RGB PNG (bands as in the SemI2I previews)."""
    from semi2i.training.semi2i_trainer import to_rgb8

    tiles = [to_rgb8(x[0]) for x in images]
    height = max(t.shape[0] for t in tiles)
    canvas = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def save_gan_preview(step: GANStep, a: Tensor, b: Tensor, path: Path) -> Path:
    """The step's preview row (e.g. A | fake A | B [| fake B]) for the first patch of each batch."""
    return save_preview_row(step.preview_images(a[:1], b[:1]), path)
