"""L-MCL's per-network memory banks of the training set, and the class-aware index sampler, on the device.

The official code keeps ``memory_i`` ``[N, 128]`` per network (uniform in +-1/sqrt(128/3), not
normalised at first), and its dataset draws, per image and in numpy on the loader workers, one image
of the same class (the image itself among them) and 8,192 images of other classes (with replacement).
Here the sampler is a device-side index table (the training set's indices sorted by class, each
class's start and count), so the draws are a few tensor ops per step, seeded by (seed, step) so a
resumed run draws the same.
"""

import math

import torch
import torch.nn as nn

from mokd_fast.methods.common.queue import gather_rows
from mokd_fast.methods.lmcl.config import POSITIVE_DRAWS


class MemoryBanks(nn.Module):
    """One ``[N, D]`` bank per network, updated from the last stage's embeddings with momentum, in ``state_dict``.

    Args:
        networks: Number of networks.
        size: N, the training images.
        dim: D, the projected width (official 128).
        seed: Seed of the initial contents (the same on every rank).
        momentum: Weight of the old row in the update (official ``nce_m`` 0.5).
    """

    def __init__(self, networks: int, size: int, dim: int, seed: int = 0, momentum: float = 0.5) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(dim / 3)
        for i in range(networks):
            self.register_buffer(f"memory_{i}", torch.rand(size, dim, generator=gen) * (2 * bound) - bound)
        self.networks, self.momentum = networks, momentum

    def bank(self, i: int) -> torch.Tensor:
        return getattr(self, f"memory_{i}")

    def rows(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Per network ``M_i[idx]`` (``idx`` ``[B, K]`` -> ``[B, K, D]``), detached: one gather per network."""
        return [self.bank(i)[idx].detach() for i in range(self.networks)]

    @torch.no_grad()
    def update(self, last: list[torch.Tensor], own: torch.Tensor) -> None:
        """``M_i[own] <- normalize(m M_i[own] + (1 - m) e_i)`` for every rank's images (one all-gather).

        Args:
            last: Per network ``[B, D]`` last-stage projected embeddings.
            own: ``[B]`` the images' dataset indices.
        """
        dim = last[0].shape[1]
        dtype = torch.promote_types(last[0].dtype, torch.float32)  # indices < 2**24 are exact in fp32
        packed = torch.cat([own[:, None].to(dtype), *(e.to(dtype) for e in last)], dim=1)  # [B, 1 + N * D]
        rows = gather_rows(packed)  # [W * B, 1 + N * D]; sync point: all-gather
        index = rows[:, 0].round().long()
        for i in range(self.networks):
            bank = self.bank(i)
            new = self.momentum * bank[index] + (1 - self.momentum) * rows[:, 1 + i * dim:1 + (i + 1) * dim].to(bank.dtype)
            bank.index_copy_(0, index, new / new.norm(dim=1, keepdim=True))


class ClassSampler(nn.Module):
    """Draws, per image, ``pos_k`` images of its class and ``neg_k`` images of other classes (with replacement).

    Args:
        labels: ``[N]`` class index of every training image, in dataset-index order.
    """

    def __init__(self, labels: torch.Tensor) -> None:
        super().__init__()
        labels = labels.long()
        order = torch.argsort(labels, stable=True)  # dataset indices sorted by class
        counts = torch.bincount(labels)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - starts[labels[order]]  # each image's position within its class
        for name, value in (("labels", labels), ("order", order), ("starts", starts), ("counts", counts),
                            ("rank", rank)):
            self.register_buffer(name, value, persistent=False)

    def sample(self, own: torch.Tensor, pos_k: int, neg_k: int, seed: int, step: int, rank: int = 0,
               world: int = 1, positives: str = "official") -> torch.Tensor:
        """``[B, 1 + pos_k + neg_k]``: the own indices, then the positives, then the negatives.

        The uniform draws are made for the whole global batch and this rank takes its rows, so the
        indices do not depend on how the batch is split across ranks.

        Args:
            positives: ``official``: ``pos_k`` distinct members of the image's whole class, the image
                itself included (the official ``np.random.choice(cls_positive[target], pos_k,
                replace=False)``: the image is its own positive with probability ``pos_k / n_c``).
                ``others``: ``pos_k`` draws with replacement from the class without the image (a
                class of one image gives the image itself).

        Raises:
            ValueError: Every image is of one class, so there is no negative to draw; or, for
                ``official``, a class has fewer than ``pos_k`` images (where numpy raises too).
        """
        n = self.labels.shape[0]
        cls = self.labels[own]  # [B]
        start, count = self.starts[cls], self.counts[cls]
        if bool((count == n).any()):
            raise ValueError("every training image is of one class: L-MCL needs negatives from other classes")
        gen = torch.Generator(device=own.device).manual_seed(seed * 1_000_003 + step)
        rows = slice(rank * own.shape[0], (rank + 1) * own.shape[0])
        u_pos = torch.rand(world * own.shape[0], pos_k, generator=gen, device=own.device)[rows]
        u_neg = torch.rand(world * own.shape[0], neg_k, generator=gen, device=own.device)[rows]
        if positives == "official":
            r = self._distinct(u_pos, count)
        elif positives == "others":
            r = self._others(u_pos, count, self.rank[own])
        else:
            raise ValueError(f"positives must be one of {', '.join(POSITIVE_DRAWS)}, got {positives!r}")
        outside = (n - count)[:, None]
        v = (u_neg * outside).long().clamp_max(outside - 1)  # [B, neg_k] in [0, N - count)
        v = v + (v >= start[:, None]).long() * count[:, None]  # skip the class's block of the sorted order
        return torch.cat([own[:, None], self.order[start[:, None] + r], self.order[v]], dim=1)

    @staticmethod
    def _distinct(u: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` distinct ranks within each class, uniform over ordered K-tuples (sampling without replacement).

        Draw j picks a rank among the ``count - j`` not yet taken, then steps over the taken ones in
        increasing order, so each of them is passed once.
        """
        k = u.shape[1]
        if bool((count < k).any()):
            raise ValueError(f"--pos_k {k} needs every class to hold at least {k} images; the smallest holds "
                             f"{int(count.min())} (the official sampler fails there too)")
        picks = []
        for j in range(k):
            r = (u[:, j] * (count - j)).long().clamp_max(count - j - 1)  # [B] in [0, count - j)
            if picks:
                for taken in torch.sort(torch.stack(picks, 1), dim=1).values.unbind(1):
                    r = r + (r >= taken).long()
            picks.append(r)
        return torch.stack(picks, 1)

    @staticmethod
    def _others(u: torch.Tensor, count: torch.Tensor, own_rank: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` ranks drawn with replacement from the class without the image itself."""
        others = (count - 1).clamp_min(1)[:, None]
        r = (u * others).long().clamp_max(others - 1)  # [B, K] in [0, count - 1)
        r = r + (r >= own_rank[:, None]).long()  # skip the image itself
        return torch.where(count[:, None] > 1, r, own_rank[:, None])
