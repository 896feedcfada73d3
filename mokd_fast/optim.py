"""Optimisers, parameter groups, schedules and gradient surgery, as the official ``main_mokd.py`` does them.

Official semantics kept here:
- CNN groups: 0 = weights (decayed by the CNN schedule), 1 = biases and 1-D tensors (no decay),
  2 = every T-head parameter, on the ViT's learning-rate and weight-decay schedules.
- ViT groups: 0 = weights (ViT decay schedule), 1 = biases and 1-D tensors (no decay); always AdamW.
- Learning rates scale with the global batch / 256; linear warm-up then cosine; weight decay cosine.
- Clipping rescales each parameter's gradient to norm <= clip separately (not the global norm).
- For the first ``freeze_last_layer`` epochs every parameter named ``*last_layer*`` (DINO head and
  T-head prototypes) gets no gradient, so the optimiser skips it entirely.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from mokd_fast.schedules import cosine_schedule
from mokd_fast.train_config import TrainConfig


def param_groups(branch: nn.Module, separate: str | None = None) -> list[dict]:
    """Official grouping: decayed weights, undecayed biases/1-D tensors, then (optionally) ``separate``.

    Args:
        branch: A student branch (backbone, head, transhead).
        separate: Parameters whose name contains this go to a third group of their own.
    """
    decayed, undecayed, other = [], [], []
    for name, param in branch.named_parameters():
        if not param.requires_grad:
            continue
        if separate is not None and separate in name:
            other.append(param)
        elif name.endswith(".bias") or param.ndim == 1:
            undecayed.append(param)
        else:
            decayed.append(param)
    groups = [{"params": decayed}, {"params": undecayed, "weight_decay": 0.0}]
    return groups + ([{"params": other}] if separate is not None else [])


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling, as the official ``utils/optimizers.py``.

    Tensors with more than one dimension get weight decay and a trust ratio
    ``eta * ||w|| / ||g + wd * w||``; 1-D tensors get neither. Each group is one pass of foreach ops.
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "eta": eta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = [p.grad.clone() for p in params]
            matrices = [i for i, p in enumerate(params) if p.ndim != 1]
            if matrices:
                w = [params[i] for i in matrices]
                d = [updates[i] for i in matrices]
                torch._foreach_add_(d, w, alpha=group["weight_decay"])
                w_norm = torch.stack(torch._foreach_norm(w))
                d_norm = torch.stack(torch._foreach_norm(d))
                one = torch.ones_like(w_norm)
                trust = torch.where(w_norm > 0, torch.where(d_norm > 0, group["eta"] * w_norm / d_norm, one), one)
                torch._foreach_mul_(d, list(trust.unbind()))
            bufs = []
            for p, u in zip(params, updates):
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                bufs.append(state["mu"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, updates)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])


def make_optimizer(kind: str, groups: list[dict], fused: bool = True) -> torch.optim.Optimizer:
    """A torch optimiser of ``kind`` (adamw, adam, sgd with momentum 0.9, lars) over ``groups``.

    ``fused`` picks torch's fused Adam/AdamW (one kernel for all parameters, CPU and CUDA) and fused
    SGD on CUDA (foreach on CPU); False runs torch's per-parameter loops. LARS is always our foreach
    form. Learning rates are placeholders until the engine's schedules set them each step.

    Raises:
        ValueError: Unknown ``kind``.
    """
    cuda = any(p.is_cuda for g in groups for p in g["params"])
    adam = {"fused": True} if fused else {"foreach": False, "fused": False}
    sgd = ({"fused": True} if cuda else {"foreach": True}) if fused else {"foreach": False, "fused": False}
    if kind == "adamw":
        return torch.optim.AdamW(groups, **adam)
    if kind == "adam":
        return torch.optim.Adam(groups, **adam)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9, **sgd)
    if kind == "lars":
        return LARS(groups)
    raise ValueError(f"unknown optimizer {kind!r}; choose adamw, adam, sgd or lars")


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


def clip_per_parameter(params: list[nn.Parameter], clip: float, fused: bool = True) -> None:
    """Scales each gradient down to L2 norm ``clip`` (coefficient ``clip / (norm + 1e-6)``, if below 1).

    The fused form computes all norms with one foreach kernel and rescales without a host sync; a
    coefficient clamped to exactly 1 leaves a gradient bit-identical, like the official skip. The plain
    form is the official loop (one ``.item()`` sync per parameter).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if fused:
        norms = torch.stack(torch._foreach_norm(grads))
        coefs = (clip / (norms + 1e-6)).clamp_(max=1.0)
        torch._foreach_mul_(grads, list(coefs.unbind()))
        return
    for grad in grads:
        coef = clip / (grad.norm(2) + 1e-6)
        if coef < 1:
            grad.mul_(coef)


def drop_last_layer_grads(params: dict[str, nn.Parameter]) -> None:
    """Removes the prototype layers' gradients, so the optimiser leaves them (and their state) untouched."""
    for name, param in params.items():
        if "last_layer" in name:
            param.grad = None
