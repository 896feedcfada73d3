"""Schedules as arrays: the official formulas, indexed by epoch or by global iteration."""

import numpy as np


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Per-iteration values: linear warm-up, then a half cosine from ``base_value`` to ``final_value``.

    Same formula as the official ``cosine_scheduler`` (the cosine runs over the post-warm-up
    iterations and never quite reaches ``final_value``), so learning rates, weight decays and EMA
    momenta match at every step.

    Returns:
        ``[epochs * iters_per_epoch]`` float64 array.
    """
    warmup_iters = warmup_epochs * iters_per_epoch
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * iters_per_epoch - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cosine))


def teacher_temp_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperatures: linear from ``warmup_temp`` to ``temp``, then constant.

    Indexed by epoch, not iteration, exactly as the official DINO/MOKD losses do.

    Returns:
        ``[epochs]`` float64 array.
    """
    return np.concatenate(
        (np.linspace(warmup_temp, temp, warmup_epochs), np.full(epochs - warmup_epochs, temp))
    )


def epoch_cosine_schedule(base_value: float, peak_value: float, epochs: int, iters_per_epoch: int,
                          warmup_epochs: int = 0) -> np.ndarray:
    """Per-iteration values constant within each epoch, as SEED's ``adjust_learning_rate`` sets them.

    Epoch ``e`` < ``warmup_epochs``: ``base + (peak - base) * e / warmup_epochs``; afterwards
    ``peak * (1 + cos(pi * e / epochs)) / 2`` (the cosine counts from epoch 0, so it does not restart
    after the warm-up, and it ends one epoch short of 0).

    Returns:
        ``[epochs * iters_per_epoch]`` float64 array.
    """
    e = np.arange(epochs, dtype=np.float64)
    cosine = peak_value * 0.5 * (1 + np.cos(np.pi * e / epochs))
    warm = base_value + (peak_value - base_value) * e / max(warmup_epochs, 1)
    return np.repeat(np.where(e < warmup_epochs, warm, cosine), iters_per_epoch)


def epoch_step_schedule(base_value: float, milestones: tuple[int, ...], epochs: int, iters_per_epoch: int,
                        factor: float = 0.1) -> np.ndarray:
    """Per-iteration values constant within each epoch, times ``factor`` at every milestone epoch passed.

    MoCo's ``adjust_learning_rate`` without ``--cos``: ``base * factor ** #{m in milestones: e >= m}``.

    Returns:
        ``[epochs * iters_per_epoch]`` float64 array.
    """
    e = np.arange(epochs)
    drops = sum((e >= m).astype(np.float64) for m in milestones) if milestones else np.zeros(epochs)
    return np.repeat(base_value * factor ** drops, iters_per_epoch)


def batch_scaled_lr(lr: float, global_batch: int, scale: bool, base_batch: int = 256) -> float:
    """``lr x global_batch / 256`` (the linear scaling rule of MoCo, SEED, MCL and L-MCL) when ``scale``, else ``lr``."""
    return lr * global_batch / base_batch if scale else lr
