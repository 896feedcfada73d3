"""Collapse monitors: statistics of a network's outputs that tell learning from the two ways self-distillation fails.

DINO-family training collapses in two ways while the total loss can still fall: every image gets
the same prototype (the mean output distribution has low entropy, few distinct argmax prototypes),
or every output becomes uniform (the per-sample entropy reaches ln K). An embedding collapses when
its L2-normalised rows all point one way (per-dimension spread 0). Every statistic here is a device
tensor computed with static shapes (no ``unique``, no ``.item()``), so logging them costs no host
sync beyond the log line's own.
"""

import math

import torch
import torch.nn.functional as F


def distribution_monitors(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics of a batch of output distributions ``probs`` ``[N, K]`` (rows sum to 1), all fp32 scalars.

    Returns:
        ``mean_entropy``: entropy of the batch-mean distribution (0: one prototype for every image;
        ln K: the batch uses every prototype evenly); ``sample_entropy``: mean per-sample entropy
        (ln K: every output uniform; near 0: confident outputs); ``distinct``: fraction of the batch's
        images whose argmax prototype no earlier image of the batch has, i.e. distinct argmaxes / N
        (1/N: all on one prototype).
    """
    p = probs.float()
    mean = p.mean(dim=0)
    mean_entropy = -(mean * mean.clamp_min(1e-30).log()).sum()
    sample_entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=1).mean()
    hits = torch.zeros(p.shape[1], device=p.device).index_add_(0, p.argmax(dim=1), torch.ones(p.shape[0], device=p.device))
    distinct = (hits > 0).sum().float() / p.shape[0]
    return {"mean_entropy": mean_entropy, "sample_entropy": sample_entropy, "distinct": distinct}


def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """``sqrt(D) x`` the mean over dimensions of the per-dimension std of the L2-normalised ``[N, D]`` rows.

    About 1 for rows spread over the sphere (each coordinate then has std ``1 / sqrt(D)``), 0 when every
    row points the same way.
    """
    z = F.normalize(embeddings.float(), dim=1)
    return z.std(dim=0, unbiased=False).mean() * math.sqrt(z.shape[1])
