"""Features of a whole split, extracted in parallel by every rank and gathered on rank 0."""

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from mokd_fast.eval.data import Split, split_batches


@dataclass(frozen=True)
class ExtractSettings:
    """How images become features.

    Attributes:
        input_size: Centre-crop side.
        resize_size: Shorter side before the crop.
        batch_size: Images per batch and rank.
        num_workers: Loader workers per rank.
        bf16: Autocast the backbone to bfloat16 (CUDA); features are stored in float32.
        channels_last: Channels-last images (CNNs on CUDA).
    """

    input_size: int
    resize_size: int
    batch_size: int
    num_workers: int
    bf16: bool
    channels_last: bool


@torch.no_grad()
def extract_features(net: nn.Module, split: Split, settings: ExtractSettings, rank: int, world_size: int,
                     device: torch.device, store: torch.device | None = None) -> tuple[torch.Tensor | None, float]:
    """``[N, D]`` float32 features of ``split`` in index order, on rank 0; other ranks get ``None``.

    Each rank runs its part; every batch is gathered on rank 0 (padding carries index -1 and is
    dropped there). Padded DDP shards may hand one sample to two ranks: both write the same row.

    Args:
        net: Images ``[B, 3, S, S]`` -> features ``[B, D]``, in eval mode.
        split: The split.
        settings: Crop, batch and precision.
        rank: This rank.
        world_size: Processes.
        device: Where the network runs.
        store: Where rank 0 keeps the matrix (default: ``device``).

    Returns:
        The features (rank 0) and the seconds the pass took (every rank).
    """
    start = time.perf_counter()
    store = store or device
    features: torch.Tensor | None = None
    autocast = torch.autocast("cuda", torch.bfloat16) if settings.bf16 else contextlib.nullcontext()
    for images, _, index in split_batches(split, settings.input_size, settings.resize_size, False, settings.batch_size,
                                          rank, world_size, device, settings.num_workers):
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            feats = net(images).float()  # [b, D]
        if world_size > 1:
            feats, index = _gather_padded(feats, index, settings.batch_size, rank, world_size)
        if rank != 0:
            continue
        if features is None:
            features = torch.zeros(len(split), feats.shape[1], device=store)
        keep = index >= 0
        features.index_copy_(0, index[keep].to(store), feats[keep].to(store))
    return features, time.perf_counter() - start


def _gather_padded(feats: torch.Tensor, index: torch.Tensor, batch_size: int, rank: int,
                   world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank 0 receives every rank's ``[batch_size, D]`` features and indices (short batches padded with -1)."""
    pad = batch_size - feats.shape[0]
    feats = torch.cat([feats, feats.new_zeros(pad, feats.shape[1])])
    index = torch.cat([index, index.new_full((pad,), -1)])
    if rank == 0:
        all_feats = [torch.empty_like(feats) for _ in range(world_size)]
        all_index = [torch.empty_like(index) for _ in range(world_size)]
        dist.gather(feats, all_feats, dst=0)  # sync point: one gather per batch, as the official extraction
        dist.gather(index, all_index, dst=0)
        return torch.cat(all_feats), torch.cat(all_index)
    dist.gather(feats, None, dst=0)
    dist.gather(index, None, dst=0)
    return feats, index
