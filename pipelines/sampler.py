"""Distributed sampling that can start mid-epoch and tells the dataset which epoch a sample is drawn in."""

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableDistributedSampler(Sampler[tuple[int, int]]):
    """``DistributedSampler``'s order (shuffle seeded by ``seed + epoch``, padding, ``rank::world``), with
    whole batches only and a start position.

    Every rank gets ``batches_per_epoch`` full batches, so no rank waits at a collective for another
    that ran out of data. Items are ``(index, epoch)`` pairs: the dataset seeds a sample's augmentation
    from them, so persistent workers need no message when the epoch changes.

    Args:
        dataset_size: Number of samples.
        batch_size: Samples per batch and rank.
        world_size: Number of ranks.
        rank: This rank.
        seed: Seed of the shuffle, shared by all ranks.
    """

    def __init__(self, dataset_size: int, batch_size: int, world_size: int, rank: int, seed: int) -> None:
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.per_rank = math.ceil(dataset_size / world_size)
        self.batches_per_epoch = self.per_rank // batch_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Selects the epoch's order and skips its first ``start_batch`` batches (for resuming)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.batches_per_epoch}]")
        self.epoch, self.start_batch = epoch, start_batch

    def indices(self) -> list[int]:
        """This rank's sample indices of the current epoch, whole batches only, from the start position."""
        gen = torch.Generator()
        gen.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.dataset_size, generator=gen).tolist()
        padding = self.per_rank * self.world_size - self.dataset_size
        order += (order * math.ceil(padding / len(order)))[:padding]
        mine = order[self.rank :: self.world_size]
        return mine[self.start_batch * self.batch_size : self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(index, self.epoch) for index in self.indices()])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
