"""A queue of embeddings kept on the device: SEED's (and MoCo-style methods') memory of earlier batches."""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """``[W * B, D]``: every rank's rows in rank order (``x`` itself without a process group); no gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


class EmbeddingQueue(nn.Module):
    """A ring buffer of ``size`` L2-normalised ``dim``-wide embeddings with its write pointer, both buffers.

    Both live in ``state_dict`` (so a checkpoint resumes the queue exactly) and on the training
    device; the pointer is a device tensor, so enqueueing needs no host sync. The initial contents
    are normalised Gaussian rows from their own generator seeded by ``seed``, so every rank starts
    with the same queue (the official code draws them unseeded per rank, leaving the ranks' queues
    different until fully overwritten). Unlike the official enqueue, which asserts that the global
    batch divides the queue size, writes wrap around the end.

    Args:
        size: Number of embeddings (official: 65536).
        dim: Embedding width (the teacher's).
        seed: Seed of the initial contents.
    """

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and width must be >= 1, got {size} x {dim}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(size, dim, generator=gen), dim=1))  # [K, D]
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, gathered: bool = False) -> None:
        """Writes every rank's ``keys`` (``[B, D]``, normalised; all-gathered under DDP) after the pointer.

        ``gathered``: ``keys`` already hold every rank's rows (``gather_rows``), e.g. when one
        all-gather served several queues.

        Raises:
            ValueError: The global batch is larger than the queue.
        """
        rows = keys.detach() if gathered else gather_rows(keys)  # [W * B, D], the official concat_all_gather order
        size = self.queue.shape[0]
        if rows.shape[0] > size:
            raise ValueError(f"{rows.shape[0]} embeddings per step do not fit a queue of {size}; "
                             "use a larger queue or a smaller global batch")
        index = (self.ptr + torch.arange(rows.shape[0], device=rows.device)) % size
        self.queue.index_copy_(0, index, rows.to(self.queue.dtype))
        self.ptr.copy_((self.ptr + rows.shape[0]) % size)
