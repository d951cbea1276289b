"""Learning-rate schedules: SemI2I's Eq. 3 and the baselines' CycleGAN-style linear decay."""

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
