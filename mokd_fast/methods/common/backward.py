"""Backpropagating a method's per-optimiser totals, with each optimiser's grad scaler."""

import functools
import operator

import torch
from torch.amp import GradScaler


def backward_totals(totals: dict[str, torch.Tensor], scalers: dict[str, GradScaler] | None,
                    single: bool = True) -> None:
    """Backpropagates every total, scaled by its optimiser's grad scaler under fp16.

    When no two totals share a parameter (everything one model learns from another is detached),
    one pass over their sum gives each parameter exactly its own total's gradient, which is what
    separate passes give; ``single=False`` runs the separate passes. Each scale still reaches only
    its own model's gradients through the sum.

    Args:
        totals: Optimiser name -> scalar loss.
        scalers: Optimiser name -> ``GradScaler`` (fp16), or None.
        single: One backward pass of the sum instead of one per total.
    """
    scaled = [scalers[name].scale(total) if scalers else total for name, total in totals.items()]
    if single:
        functools.reduce(operator.add, scaled).backward()
    else:
        for loss in scaled:
            loss.backward()
