"""Shared test helpers: comparisons, a two-sample statistic, a free port and a gloo runner for process groups."""

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|``: a scale-aware error that ignores the sign-change noise of tiny entries."""
    scale = b.detach().abs().max().clamp_min(1e-30)
    return ((a.detach() - b.detach()).abs().max() / scale).item()


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, rel: float, what: str) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = max_rel_err(a, b)
    assert err <= rel, f"{what}: relative error {err:.3g} > {rel:g}"


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    gap = np.searchsorted(np.sort(a), grid, "right") / len(a) - np.searchsorted(np.sort(b), grid, "right") / len(b)
    return float(np.abs(gap).max())


def free_port() -> int:
    """A TCP port free on the loopback interface, for a test's process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_entry(rank: int, world: int, port: int, worker, args: tuple, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results[rank] = worker(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_gloo(worker, world: int, *args) -> dict:
    """``{rank: worker(rank, world, *args)}`` from ``world`` spawned processes in one gloo group (CPU).

    ``worker`` must be a module-level function (spawned processes import it) returning picklable data.
    """
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_gloo_entry, args=(world, free_port(), worker, args, results), nprocs=world, join=True)
        return dict(results)
