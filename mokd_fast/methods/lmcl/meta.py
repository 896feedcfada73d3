"""L-MCL's meta step: learns the pair-weight network by differentiating through a few unrolled SGD steps.

The official code (``losses/meta_optimizers.py: MetaSGD``, used by ``main_layer_mcl_imagenet_meta.py``
every ``--meta-freq`` batches) does, on the current batch:
1. ``times`` recorded SGD steps (momentum, weight decay, no Nesterov; fresh momentum) of the
   networks and projection heads on the inner objective, the weighted contrastive loss whose pair
   weights come from the weight network (with gradient);
2. one recorded SGD step on the outer objective, the stages' cross-entropy;
3. the outer gradient ``a0`` at the final parameters (``a1 = 0``); then, for each recorded step in
   reverse, with the modules restored to that step's state (parameters, BatchNorm statistics,
   memory banks): ``g = grad(objective, params, create_graph)``, ``X = sum g * (a1 - lr a0)``,
   ``X.backward()``, which gives the parameters ``H (a1 - lr a0)`` and accumulates the weight
   network's meta-gradient, then ``a0 <- a0 (1 - lr wd) + a1 + H(...)``, ``a1 <- m a1 - lr m a0``;
4. the weight network takes one Nesterov SGD step with its gradient. The modules end as the last
   replay left them (``rollback``): parameters as before the meta step, BatchNorm statistics and
   memory banks as before it plus that replay's forward (the first inner step's), an official
   side effect kept as it is.
This module does the same with explicit snapshots and ``torch.autograd.grad``. Under DDP the
inner steps run per rank, as the official ``net.module`` calls do; the outer objective's gradients
and the weight network's are averaged across ranks, as the official DDP-wrapped ``net`` and weight
network average them.
"""

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn


def average_across_ranks(tensors: list[torch.Tensor]) -> None:
    """In place: each tensor's mean over the ranks (nothing without a process group). Sync point: all-reduce."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for t in tensors:
        dist.all_reduce(t)
        t.div_(dist.get_world_size())


class MetaStep:
    """One meta step over ``params`` (networks and heads) for the ``weights`` (the weight network's parameters).

    Args:
        params: The parameters the recorded SGD steps update.
        stateful: Modules whose whole state (parameters and buffers: BatchNorm statistics, memory
            banks) each recorded step snapshots and the meta step restores.
        weights: The weight network's parameters, which get the meta-gradient in ``.grad``.
        times: Inner steps (official 2).
        momentum: SGD momentum of the recorded steps (official 0.9).
        weight_decay: Their weight decay (official 1e-4).
    """

    def __init__(self, params: list[nn.Parameter], stateful: list[nn.Module], weights: list[nn.Parameter],
                 times: int = 2, momentum: float = 0.9, weight_decay: float = 1e-4) -> None:
        self.params, self.stateful, self.weights = params, stateful, weights
        self.times, self.momentum, self.weight_decay = times, momentum, weight_decay

    def _snapshot(self) -> list[dict[str, torch.Tensor]]:
        return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.stateful]

    def _restore(self, snapshot: list[dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for module, state in zip(self.stateful, snapshot):
                for k, v in module.state_dict().items():
                    v.copy_(state[k])

    @torch.no_grad()
    def _sgd(self, grads: list[torch.Tensor | None], bufs: list[torch.Tensor | None], lr: float) -> None:
        """torch's SGD (momentum, coupled weight decay, no Nesterov) in place: a parameter without a gradient
        is skipped (no decay, buffer untouched), and a buffer starts as the first step's gradient."""
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            d = g + self.weight_decay * p
            bufs[i] = d if bufs[i] is None else self.momentum * bufs[i] + d
            p.sub_(lr * bufs[i])

    def _grads(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of ``loss``, zeros for parameters it does not reach (the official ``p.grad = zeros``)."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)]

    def run(self, inner: Callable[[], torch.Tensor], outer: Callable[[], torch.Tensor], lr: float) -> None:
        """Leaves the meta-gradient in the weights' ``.grad`` and every ``stateful`` module as it found it."""
        records: list = []
        bufs: list[torch.Tensor | None] = [None] * len(self.params)
        for kind in ["inner"] * self.times + ["outer"]:
            records.append((kind, self._snapshot()))
            loss = inner() if kind == "inner" else outer()
            grads = list(torch.autograd.grad(loss, self.params, allow_unused=True))
            if kind == "outer":
                average_across_ranks([g for g in grads if g is not None])
            self._sgd(grads, bufs, lr)
        a0 = self._grads(outer())  # the outer gradient at the final parameters
        average_across_ranks(a0)
        a1 = [torch.zeros_like(g) for g in a0]
        meta = [torch.zeros_like(w) for w in self.weights]
        for kind, snapshot in reversed(records):
            self._restore(snapshot)
            loss = inner() if kind == "inner" else outer()
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            x = sum((g * (b - lr * a)).sum() for g, a, b in zip(grads, a0, a1) if g is not None)
            found = torch.autograd.grad(x, [*self.params, *self.weights], allow_unused=True)
            hvp = [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(found, self.params)]
            if kind == "outer":
                average_across_ranks(hvp)
            for m, h in zip(meta, found[len(self.params):]):
                if h is not None:
                    m.add_(h.detach())
            a0, a1 = ([a * (1 - lr * self.weight_decay) + b + h for a, b, h in zip(a0, a1, hvp)],
                      [self.momentum * b - lr * self.momentum * a for a, b in zip(a0, a1)])
        average_across_ranks(meta)
        for w, m in zip(self.weights, meta):
            w.grad = m
