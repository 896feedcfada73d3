"""Checkpoint entries several methods write and read the same way: CPU copies of state, the architectures recorded."""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def cpu_state(state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A module's state dict (or a dict of tensors) as CPU copies: plain data that training no longer changes."""
    items = state.state_dict().items() if isinstance(state, nn.Module) else state.items()
    return {k: v.detach().cpu().clone() for k, v in items}


def check_archs(ckpt: dict[str, Any], archs: Iterable[str], what: str, flag: str) -> None:
    """Refuses weights recorded as another architecture: ``ckpt["arch_i"]`` against the ``i``-th of ``archs``.

    Raises:
        ValueError: Names the network (``what`` and its number), the saved architecture and ``flag``'s.
    """
    for i, arch in enumerate(archs, start=1):
        saved = ckpt.get(f"arch_{i}")
        if saved is not None and saved != arch:
            raise ValueError(f"{what} {i} was trained as {saved!r} but {flag} has {arch!r}")


def without(ckpt: dict[str, Any], used: Iterable[str]) -> dict[str, Any]:
    """The entries of ``ckpt`` a method did not read, for the engine (optimisers, epoch, its own block)."""
    used = set(used)
    return {k: v for k, v in ckpt.items() if k not in used}
