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
