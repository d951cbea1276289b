"""The SemI2I learning-rate schedule, Eq. 3 of the paper."""

from __future__ import annotations


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
