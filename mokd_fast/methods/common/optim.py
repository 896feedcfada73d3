"""Optimisers several methods build: the official parameter grouping, LARS, and one constructor for every kind."""

import torch
import torch.nn as nn


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
