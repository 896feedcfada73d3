"""Gradient surgery the engine applies between backward and the optimiser step, as the official code does.

Clipping rescales each parameter's gradient to norm <= clip separately (not the global norm). For the
first ``freeze_last_layer`` epochs every parameter named ``*last_layer*`` (DINO head and T-head
prototypes) gets no gradient, so the optimiser skips it entirely.
"""

import torch
import torch.nn as nn


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
