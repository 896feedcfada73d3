"""MCL-MoCo's four terms, as the official ``moco/builder_mcl.py`` computes them, in fp32 whatever autocast is active.

For peers i and j, with normalised queries ``q``, keys ``k`` and queues ``Q``:
``l_i = [q_i . k_i | q_i Q_i] / t`` (a peer against its own key and queue) and
``l_ij = [q_i . k_j | q_i Q_j] / t`` (against the other peer's). Then
- ``vcl = sum_i CE(l_i, 0)``, each peer's MoCo InfoNCE;
- ``svcl = sum_{i != j} KL_T(l_i, sg l_j)``, each peer's own-queue distribution towards the others';
- ``icl = sum_{i < j} CE(l_ij, 0) + CE(l_ji, 0)``;
- ``sicl = sum_{i < j} KL_T(l_ij, sg l_ji) + KL_T(l_ji, sg l_ij)``,
where ``KL_T(s, t) = T^2 KL(softmax(t / T) || softmax(s / T))`` averaged over the batch (official
``KLDiv``, T = 3). The logits are fp32: the official log-sum-exp over 65,537 columns at 1/0.07 is
outside fp16's range.

With in-batch negatives (``--negatives batch``, not official; MoCo v3's contrast) there is no queue:
``l_i = q_i K_i^T / t`` and ``l_ij = q_i K_j^T / t`` over the keys ``K`` of every image of the global
batch, each query's positive being its own image's key; the four terms are otherwise the same.
"""

import torch
import torch.nn.functional as F

from mokd_fast.core.precision import at_least_fp32
from mokd_fast.methods.common.losses import kd_kl


def contrast_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """``[B, 1 + K]``: each query's cosine with its key, then with every queue entry, over the temperature.

    Without a queue, ``[B, W * B]``: each query's cosine with every key of the global batch ``k``.
    """
    if queue is None:
        return q @ k.T / temperature  # [B, W * B]
    pos = (q * k).sum(dim=1, keepdim=True)  # [B, 1]
    return torch.cat([pos, q @ queue.T], dim=1) / temperature  # [B, 1 + K]


def mcl_moco_losses(q: list[torch.Tensor], k: list[torch.Tensor], queues: list[torch.Tensor] | None,
                    temperature: float = 0.07, kd_temperature: float = 3.0,
                    first_key: int = 0) -> dict[str, torch.Tensor]:
    """MCL-MoCo's ``vcl``, ``svcl``, ``icl`` and ``sicl`` (scalars, fp32; fp64 for fp64 inputs).

    Args:
        q: Per peer, ``[B, D]`` L2-normalised query embeddings of view 0 (with gradients).
        k: Per peer, L2-normalised key embeddings of view 1 (no gradient flows): ``[B, D]``, the
            queries' own images, with queues; ``[W * B, D]``, every rank's, without (in-batch negatives).
        queues: Per peer, ``[K, D]`` normalised keys of earlier batches; None: in-batch negatives.
        temperature: Contrastive temperature (official 0.07).
        kd_temperature: Temperature of the KL terms (official 3).
        first_key: In-batch negatives: the row of ``k`` that holds the first query's key (this rank's
            offset in the gathered batch).
    """
    n = len(q)
    if not n == len(k) == len(queues if queues is not None else k) or n < 2:
        raise ValueError(f"need the same number (>= 2) of queries, keys and queues, got {len(q)}, {len(k)}, "
                         f"{len(queues) if queues is not None else 'no queues'}")
    with torch.autocast(q[0].device.type, enabled=False):
        q = [at_least_fp32(x) for x in q]
        k = [at_least_fp32(x.detach()) for x in k]
        negatives = [at_least_fp32(x.detach()) for x in queues] if queues is not None else [None] * n
        batch = torch.arange(q[0].shape[0], device=q[0].device)
        target = first_key + batch if queues is None else torch.zeros_like(batch)  # each query's positive column
        own = [contrast_logits(q[i], k[i], negatives[i], temperature) for i in range(n)]  # [B, 1 + K] or [B, W * B]
        vcl = sum(F.cross_entropy(logits, target) for logits in own)
        svcl = sum(kd_kl(own[i], own[j], kd_temperature) for i in range(n) for j in range(n) if i != j)
        icl = q[0].new_zeros(())
        sicl = q[0].new_zeros(())
        for i in range(n):
            for j in range(i + 1, n):
                l_ij = contrast_logits(q[i], k[j], negatives[j], temperature)
                l_ji = contrast_logits(q[j], k[i], negatives[i], temperature)
                icl = icl + F.cross_entropy(l_ij, target) + F.cross_entropy(l_ji, target)
                sicl = sicl + kd_kl(l_ij, l_ji, kd_temperature) + kd_kl(l_ji, l_ij, kd_temperature)
    return {"vcl": vcl, "svcl": svcl, "icl": icl, "sicl": sicl}
