"""Shuffle BN (MoCo's ``_batch_shuffle_ddp``/``_batch_unshuffle_ddp``): key encoders see a batch permuted across ranks.

A key encoder in train mode normalises with the statistics of the sub-batch it sees; computed on the
rank's own images, those statistics would let a query find its key by them. So the global batch is
permuted, each rank encodes one slice, and the keys are put back. The permutation is drawn from a
generator seeded by (seed, step) on every rank, so all ranks agree without the official broadcast
and a resumed run draws the same one.
"""

import torch
import torch.distributed as dist

from mokd_fast.methods.common.queue import gather_rows


def step_permutation(n: int, seed: int, step: int, device: torch.device) -> torch.Tensor:
    """``[n]``: the permutation of the global batch at ``step``, the same on every rank."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randperm(n, generator=gen).to(device)


def shuffled_slice(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """This rank's ``[B, ...]`` slice of the permuted global batch (``x``: this rank's ``[B, ...]``)."""
    rank = dist.get_rank()
    everything = gather_rows(x)  # [W * B, ...]; sync point: all-gather
    return everything[perm[rank * x.shape[0]:(rank + 1) * x.shape[0]]]


def unshuffled_slice(y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Keys of this rank's own images from each rank's slice ``y`` (``[B, D]``) of the permuted batch."""
    rank = dist.get_rank()
    everything = gather_rows(y)  # [W * B, D], in permuted order
    inverse = torch.argsort(perm)
    return everything[inverse[rank * y.shape[0]:(rank + 1) * y.shape[0]]]
