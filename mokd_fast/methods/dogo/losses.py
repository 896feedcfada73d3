"""DoGo's loss kernels, as the official code computes them (NeurAI-Lab/DoGo, branch ``dogo``).

Each returns a scalar fp32 (or fp64) tensor whatever autocast is active: half inputs are upcast and the
similarities, softmaxes and logs run in fp32 (the official ``softmax(...).log()`` underflows to
-inf in half precision; ``log_softmax`` here is the same value in fp32 to about 1e-7). Cosine
similarities are matmuls of L2-normalised rows, never the official ``[B, 1, D] x [1, B, D]``
broadcast (which materialises ``B x B x D``).

Under DDP (``global_batch=True`` with a process group of W > 1 ranks) each rank keeps its own rows
and compares them with every rank's columns (all-gathered; with gradient for this peer, without for
the detached peer), and the loss is scaled by W, so that DDP's gradient averaging gives exactly the
gradient one process computes on the whole batch, as the official code does on one node
(``nn.DataParallel`` gathers the full batch before the loss). With one process it is the plain form.

Official quirks kept (they change the numbers): NT-Xent's temperature is 0.5 in the official code
whatever the config says (the default here); the similarity KL uses ``kl_div``'s default
``reduction='mean'``, which divides by ``B**2`` (not ``B``), so the official weights (100 for peer
1, 1 for peer 2) apply to that scale.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather


def _fp32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Half-precision inputs upcast to fp32; fp32 and fp64 ones kept (a float64 check stays float64)."""
    return [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]


def _world(global_batch: bool) -> int:
    return dist.get_world_size() if global_batch and dist.is_available() and dist.is_initialized() else 1


def _columns(t: torch.Tensor, world: int, grad: bool) -> torch.Tensor:
    """``[W * B, D]``: every rank's rows in rank order (this rank's own rows keep their gradient if ``grad``)."""
    if world == 1:
        return t
    if grad:
        return torch.cat(all_gather(t))  # backward sends each rank the gradient of its rows, summed over ranks
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.detach())
    return torch.cat(parts)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` cosine similarities of the rows of ``a [N, D]`` and ``b [M, D]`` (eps as ``nn.CosineSimilarity``)."""
    return F.normalize(a, dim=1, eps=1e-8) @ F.normalize(b, dim=1, eps=1e-8).T


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, global_batch: bool = False) -> torch.Tensor:
    """SimCLR's NT-Xent over the ``2B`` projections of two views, official reduction (sum / 2B).

    Row ``n`` of ``[z1; z2]`` has its positive at ``n +- B``; the other ``2B - 2`` rows (itself
    excluded) are its negatives.

    Args:
        z1: ``[B, D]`` projections of view 1 (normalised inside: cosine similarity, as official).
        z2: ``[B, D]`` projections of view 2.
        temperature: Divides the cosine similarities (official: 0.5, hard-coded there).
        global_batch: Under DDP, negatives from every rank (see the module docstring).
    """
    world = _world(global_batch)
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = _fp32(z1, z2)
        b = z1.shape[0]
        rank = dist.get_rank() if world > 1 else 0
        rows = torch.cat([z1, z2])  # [2B, D], this rank's samples
        cols = torch.cat([_columns(z1, world, True), _columns(z2, world, True)])  # [2WB, D]: all of view 1, then view 2
        n = cols.shape[0]
        logits = _cosine(rows, cols) / temperature  # [2B, 2WB]
        own = torch.arange(2 * b, device=rows.device)
        own = torch.where(own < b, rank * b + own, n // 2 + rank * b + own - b)  # each row's own column
        positive = torch.where(own < n // 2, own + n // 2, own - n // 2)
        logits = logits.masked_fill(F.one_hot(own, n).bool(), float("-inf"))
        return world * F.cross_entropy(logits, positive, reduction="sum") / n


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetrised negative cosine, ``-(sg(z1) . p2 + sg(z2) . p1) / 2`` averaged over the batch.

    As official, the inputs are used as given: the official model L2-normalises ``p`` and ``z``
    before the loss, and the loss takes plain dot products.

    Args:
        p1: ``[B, D]`` predictor outputs of view 1.
        p2: ``[B, D]`` predictor outputs of view 2.
        z1: ``[B, D]`` projections of view 1 (stop-gradient).
        z2: ``[B, D]`` projections of view 2 (stop-gradient).
    """
    with torch.autocast(p1.device.type, enabled=False):
        p1, p2, z1, z2 = _fp32(p1, p2, z1.detach(), z2.detach())
        return -0.5 * ((z1 * p2).sum(dim=1).mean() + (z2 * p1).sum(dim=1).mean())


def similarity_kl(x: torch.Tensor, y: torch.Tensor, peer_x: torch.Tensor, peer_y: torch.Tensor,
                  temperature: float = 0.1, global_batch: bool = False) -> torch.Tensor:
    """KL of the peer's cross-view similarity distribution from this peer's, official reduction (mean over B*B).

    ``S = softmax_rows(cos(x_i, y_j) / T)`` is this peer's ``[B, B]`` distribution (rows: view x,
    columns: view y); ``P`` is the peer's, detached. Returns ``sum P (log P - log S) / B**2``,
    which is ``F.kl_div(S.log(), P)`` with its default reduction, as the official ``KLLoss``.

    Args:
        x: ``[B, D]`` this peer's embeddings of view x (normalised inside).
        y: ``[B, D]`` this peer's embeddings of view y.
        peer_x: ``[B, D]`` the other peer's embeddings of its view x (no gradient flows into them).
        peer_y: ``[B, D]`` the other peer's embeddings of its view y.
        temperature: The similarities' temperature (official ``KL_temperature``: 0.1).
        global_batch: Under DDP, this rank's rows against every rank's columns (``[B, W*B]``).
    """
    world = _world(global_batch)
    with torch.autocast(x.device.type, enabled=False):
        x, y, peer_x, peer_y = _fp32(x, y, peer_x.detach(), peer_y.detach())
        log_s = F.log_softmax(_cosine(x, _columns(y, world, True)) / temperature, dim=1)  # [B, W*B]
        log_p = F.log_softmax(_cosine(peer_x, _columns(peer_y, world, False)) / temperature, dim=1)
        columns = log_s.shape[1]  # the global batch: the official mean runs over B_global x B_global entries
        return world * F.kl_div(log_s, log_p, reduction="sum", log_target=True) / columns**2
