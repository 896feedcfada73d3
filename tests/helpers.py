"""Comparison helpers for equivalence tests."""

import torch


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|``: a scale-aware error that ignores the sign-change noise of tiny entries."""
    scale = b.detach().abs().max().clamp_min(1e-30)
    return ((a.detach() - b.detach()).abs().max() / scale).item()


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, rel: float, what: str) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = max_rel_err(a, b)
    assert err <= rel, f"{what}: relative error {err:.3g} > {rel:g}"
