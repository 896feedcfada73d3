"""The official linear probe: a linear layer on frozen features, SGD with momentum, cosine schedule."""

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mokd_fast.eval.data import Split, split_batches
from mokd_fast.eval.extract import ExtractSettings


class LinearClassifier(nn.Module):
    """One linear layer; weights drawn from N(0, 0.01), bias zero, as official."""

    def __init__(self, dim: int, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.linear = nn.Linear(dim, num_labels)
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def image_feature_batches(net: nn.Module, split: Split, settings: ExtractSettings, rank: int, world_size: int,
                          device: torch.device, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The official training pass: fresh random crops and flips every epoch through the frozen backbone.

    Yields:
        ``features [B, D]`` and labels ``[B]``; padding samples are dropped.
    """
    autocast = torch.autocast("cuda", torch.bfloat16) if settings.bf16 else contextlib.nullcontext()
    for images, labels, index in split_batches(split, settings.input_size, settings.resize_size, True,
                                               settings.batch_size, rank, world_size, device, settings.num_workers,
                                               seed, epoch):
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast:
            feats = net(images).float()
        keep = index >= 0
        yield feats[keep], labels[keep]


def cached_feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int, rank: int,
                           world_size: int, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's shuffled batches of pre-extracted (centre-crop) features; equal batch counts on all ranks."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + epoch)).to(features.device)
    mine = order[rank::world_size]
    per_rank = -(-len(labels) // world_size)
    for start in range(0, per_rank, batch_size):
        idx = mine[start:start + batch_size]
        yield features[idx], labels[idx]


def train_epoch(classifier: nn.Module, optimizer: torch.optim.Optimizer,
                batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One epoch of cross-entropy steps; returns the mean loss of this rank's batches."""
    classifier.train()
    total = torch.zeros((), device=next(classifier.parameters()).device)
    steps = 0
    for feats, labels in batches:
        logits = classifier(feats)
        # An all-padding batch still joins DDP's gradient all-reduce, with a zero loss.
        loss = F.cross_entropy(logits, labels) if len(labels) else logits.sum() * 0.0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        steps += 1
    return total.item() / max(steps, 1)  # sync point: once per epoch


@torch.no_grad()
def accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 4096) -> tuple[float, float, float]:
    """Top-1, top-5 (percent; top-5 needs 5 classes, else it equals top-1's rank cut) and mean loss."""
    classifier.eval()
    hits1 = hits5 = 0
    loss = 0.0
    for start in range(0, len(labels), batch_size):
        logits = classifier(features[start:start + batch_size])
        y = labels[start:start + batch_size]
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        hits1 += int(ranked[:, 0].sum())
        hits5 += int(ranked.any(dim=1).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    n = len(labels)
    return 100.0 * hits1 / n, 100.0 * hits5 / n, loss / n


def broadcast_from_main(t: torch.Tensor | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rank 0's tensor on every rank (cached-feature training needs the train matrix everywhere)."""
    if not dist.is_initialized():
        return t
    box = [tuple(t.shape) if t is not None else None]
    dist.broadcast_object_list(box, src=0)
    out = t if t is not None else torch.empty(box[0], dtype=dtype, device=device)
    dist.broadcast(out, src=0)
    return out
