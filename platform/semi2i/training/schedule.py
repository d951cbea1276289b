"""Learning-rate schedules: SemI2I's Eq. 3, the baselines' CycleGAN-style linear decay and the U-net
fine-tune's cosine decay."""

from __future__ import annotations

import math


def semi2i_learning_rate(epoch: int, base_lr: float, num_epochs: int, decay_epoch: int) -> float:
    """Eq. 3: LR = base_lr for epochs before ``decay_epoch``, then
    LR = base_lr × (num_epochs − epoch) / (num_epochs − decay_epoch).

    Epochs count from 0, so with the paper's 25 epochs and decay epoch 15 the rate is 1e-3 up to
    epoch 15 inclusive and falls linearly to 1e-4 in the last epoch (24). Constant within an epoch.
    """
    if not 0 <= epoch < num_epochs:
        raise ValueError(f"epoch {epoch} outside [0, {num_epochs})")
    if epoch < decay_epoch or num_epochs == decay_epoch:
        return base_lr
    return base_lr * (num_epochs - epoch) / (num_epochs - decay_epoch)


def semi2i_step_learning_rate(step: int, base_lr: float, total_steps: int, decay_start: int) -> float:
    """Eq. 3 per step instead of per epoch (``lr_schedule: step``): base_lr for steps before
    ``decay_start``, then base_lr × (total − step) / (total − decay_start), a straight line to ~0 at the end.

    ``step`` counts completed steps (0 for the first update), so the last update (step = total − 1) uses
    base_lr / (total − decay_start). Eq. 3 per epoch never goes below base_lr / (epochs − decay_epoch): with
    the quick profile's 5 epochs and decay epoch 3 its rates are 1, 1, 1, 1, 0.5 (× lr).
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside [0, {total_steps})")
    if step < decay_start or total_steps == decay_start:
        return base_lr
    return base_lr * (total_steps - step) / (total_steps - decay_start)


def linear_decay_learning_rate(epoch: int, base_lr: float, num_epochs: int, decay_epoch: int) -> float:
    """CycleGAN's reference rule (``LambdaLR`` with ``n_epochs=decay_epoch``,
    ``n_epochs_decay=num_epochs − decay_epoch``): base_lr × (1 − max(0, epoch + 1 − decay_epoch) /
    (num_epochs − decay_epoch + 1)).

    Epochs count from 0: constant while epoch + 1 <= decay_epoch, then falling linearly to
    base_lr / (num_epochs − decay_epoch + 1) in the last epoch (never 0). Used by the baseline GANs.
    """
    if not 0 <= epoch < num_epochs:
        raise ValueError(f"epoch {epoch} outside [0, {num_epochs})")
    return base_lr * (1.0 - max(0, epoch + 1 - decay_epoch) / (num_epochs - decay_epoch + 1))


def cosine_learning_rate(step: int, base_lr: float, total_steps: int) -> float:
    """Cosine decay over a run of ``total_steps`` optimizer steps: base_lr × ½(1 + cos(π·step/total)).

    ``step`` counts completed steps (0 for the first update), so the first update uses base_lr and the
    last one (step = total − 1) a small positive rate. A function of the step alone: a resumed run
    continues on the same curve with no scheduler state to save.
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside [0, {total_steps})")
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
