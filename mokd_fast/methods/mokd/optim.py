"""MOKD's optimisers and schedules, as the official ``main_mokd.py`` builds them.

- CNN groups: 0 = weights (decayed by the CNN schedule), 1 = biases and 1-D tensors (no decay),
  2 = every T-head parameter, on the ViT's learning-rate and weight-decay schedules.
- ViT groups: 0 = weights (ViT decay schedule), 1 = biases and 1-D tensors (no decay); always AdamW.
- Learning rates scale with the global batch / 256; linear warm-up then cosine; weight decay cosine.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from mokd_fast.methods.common.optim import make_optimizer, param_groups
from mokd_fast.methods.common.schedules import cosine_schedule
from mokd_fast.methods.mokd.train_config import TrainConfig


def build_optimizers(students: nn.Module, optimizer: str,
                     fused: bool = True) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The CNN optimiser (``optimizer``: adamw, sgd or lars) and the ViT's AdamW, on the official groups."""
    if optimizer not in ("adamw", "sgd", "lars"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose adamw, sgd or lars")
    opt_cnn = make_optimizer(optimizer, param_groups(students.cnn, separate="transhead"), fused)
    return opt_cnn, make_optimizer("adamw", param_groups(students.vit), fused)

# The official groups' schedules: (learning-rate array, weight-decay array or None for "keep 0").
CNN_GROUP_SCHEDULES = [("lr_cnn", "wd_cnn"), ("lr_cnn", None), ("lr_vit", "wd_vit")]  # weights, biases, T-head

VIT_GROUP_SCHEDULES = [("lr_vit", "wd_vit"), ("lr_vit", None)]  # weights, biases

@dataclass
class Schedules:
    """Per-iteration values (``[epochs * iters_per_epoch]`` arrays) of every scheduled hyper-parameter."""

    lr_cnn: np.ndarray
    wd_cnn: np.ndarray
    lr_vit: np.ndarray
    wd_vit: np.ndarray
    momentum: np.ndarray

    @classmethod
    def build(cls, cfg: TrainConfig, epochs: int, iters_per_epoch: int, world_size: int,
              momentum_teacher: float) -> "Schedules":
        """The official schedules, with the flags the official code ignores honoured."""
        scale = cfg.batch_size_per_gpu * world_size / 256.0
        return cls(
            lr_cnn=cosine_schedule(cfg.lr_cnn * scale, cfg.final_lr_cnn, epochs, iters_per_epoch, cfg.warmup_epochs),
            wd_cnn=cosine_schedule(cfg.weight_decay_cnn, cfg.weight_decay_end_cnn, epochs, iters_per_epoch),
            lr_vit=cosine_schedule(cfg.lr_vit * scale, cfg.final_lr_vit, epochs, iters_per_epoch, cfg.warmup_epochs),
            wd_vit=cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, epochs, iters_per_epoch),
            momentum=cosine_schedule(momentum_teacher, 1.0, epochs, iters_per_epoch),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name, in log order; ``CNN_GROUP_SCHEDULES``/``VIT_GROUP_SCHEDULES`` name them."""
        return {name: getattr(self, name) for name in ("lr_cnn", "wd_cnn", "lr_vit", "wd_vit", "momentum")}
