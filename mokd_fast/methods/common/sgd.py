"""The optimiser SEED, MCL-MoCo and L-MCL share (settings: ``recipes.SGDRecipe``): one SGD over a module, decay on
every parameter, per-epoch lr; ``--optimizer adam`` swaps in Adam for short runs.

Their official code builds ``SGD(model.parameters(), lr, momentum, weight_decay)`` with no parameter
groups (biases and norms decayed too) and sets the learning rate once per epoch: x0.1 at each
``--schedule`` epoch, or a cosine with ``--cos``; the rate scales with the global batch / 256.
"""

from typing import Any

import numpy as np
from torch import nn

from mokd_fast.methods.base import OptimizerSpec
from mokd_fast.methods.common.optim import make_optimizer
from mokd_fast.methods.common.schedules import (
    batch_scaled_lr,
    epoch_cosine_schedule,
    epoch_step_schedule,
)


def sgd_over(name: str, module: nn.Module, train: Any, fused: bool, nesterov: bool = False) -> dict[str, OptimizerSpec]:
    """``{name: spec}``: one optimiser over every parameter of ``module``, its learning rate from the ``lr`` array.

    ``train.optimizer`` sgd (official): ``train``'s momentum (Nesterov when asked and momentum > 0), weight decay and
    clip; adam: torch's Adam with the weight decay as coupled L2, no momentum setting.
    """
    group = {"params": list(module.parameters()), "weight_decay": train.weight_decay}
    if train.optimizer == "sgd":
        group["momentum"] = train.momentum
        if nesterov:
            group["nesterov"] = train.momentum > 0
    opt = make_optimizer(train.optimizer, [group], fused)
    return {name: OptimizerSpec(opt, [("lr", None)], dict(module.named_parameters()), train.clip_grad)}


def step_or_cosine_lr(train: Any, epochs: int, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
    """``{"lr": [epochs * iters_per_epoch]}``: per epoch, x0.1 at each ``train.schedule`` epoch, or a cosine with
    ``train.cos``, from ``train.lr`` scaled by the global batch (``train.scale_lr``); the first
    ``train.warmup_epochs`` epochs rise linearly from 0, per step, instead (the cosine still counts from epoch 0)."""
    lr = batch_scaled_lr(train.lr, train.batch_size_per_gpu * world_size, train.scale_lr)
    if train.cos:
        values = epoch_cosine_schedule(lr, lr, epochs, iters_per_epoch)
    else:
        values = epoch_step_schedule(lr, train.schedule, epochs, iters_per_epoch)
    warm = min(train.warmup_epochs * iters_per_epoch, len(values))
    values[:warm] = np.linspace(0.0, lr, warm)
    return {"lr": values}
