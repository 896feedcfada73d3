"""L-MCL's losses, as the official ImageNet criterion computes them (winycg/L-MCL @ 2c0901e,
``losses/imagenet_sup_layer_mcl_meta_loss.py``, ``utils.py: DistillKL``), in fp32 whatever autocast is active.

Every network i has a memory bank ``M_i`` ``[N, D]`` of its last stage's projected embeddings.
For each image the sampler draws ``idx = [own, pos_k same-class, neg_k other-class]`` indices. For an
ordered pair of networks (a, b) and a pair of their stages (k, z), with ``e_a = e_ak``, ``e_b = e_bz``:
- inter-network logits ``l_ab = M_a[idx] e_b / tau`` and ``l_ba = M_b[idx] e_a / tau``:
  ``icl`` = minus the weighted mean log-probability of the own and same-class columns, summed over
  both; ``sicl`` = the weighted KL of each towards the other (temperature ``kd_T``);
- intra-network logits over ``idx[:, 1:]`` (own index dropped): ``M_a[idx'] e_a / tau`` and
  ``M_a[idx'] e_b / tau`` (official: ``M_a`` for both, ``official_vcl``; ``M_b`` for the second
  otherwise); ``vcl`` and ``svcl`` the same way with the same-class column as the positive.
Terms are summed (not averaged) over ordered pairs and stage pairs, each weighted per sample by the
weight network's ``w`` for that pair. The official code runs one gather and four products per
pair (128 gathers of ``[B, 8194, 128]`` for two ResNets); a product depends only on the memory and
the embedding, so here each memory is gathered once and each (memory, network, stage) product
computed once, the same numbers in ``N^2 S`` products instead of ``4 N (N - 1) S^2``. The official
log-sum-exp has no max shift; the shifted form used here is the same value (it only differs where
the official one overflows).
"""

import torch
import torch.nn.functional as F

from mokd_fast.core.precision import at_least_fp32
from mokd_fast.methods.common.losses import kd_kl


def weighted_kl(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 / B * sum_n w_n sum_k p_t (log p_t - log p_s)``: the official ``KLDiv`` with per-sample weights ``[B]``."""
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher.detach() / temperature, dim=1)
    return temperature ** 2 * (weight[:, None] * log_p_t.exp() * (log_p_t - log_p_s)).sum() / student.shape[0]


def positive_nll(logits: torch.Tensor, n_pos: int, weight: torch.Tensor) -> torch.Tensor:
    """``-1/B sum_n w_n mean_{k < n_pos} log_softmax(logits)[n, k]``: the first ``n_pos`` columns are positives."""
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(weight * log_prob[:, :n_pos].mean(dim=1)).mean()


def lmcl_memory_losses(embeddings: list[list[torch.Tensor]], rows: list[torch.Tensor], weights: torch.Tensor,
                       tau: float = 0.07, kd_temperature: float = 3.0, pos_k: int = 1,
                       official_vcl: bool = True) -> dict[str, torch.Tensor]:
    """L-MCL's ``vcl``, ``svcl``, ``icl``, ``sicl`` against the memory banks (scalars, fp32).

    Args:
        embeddings: ``embeddings[i][s]``: network i's stage-s projected, L2-normalised ``[B, D]``.
        rows: ``rows[i]``: ``M_i[idx]``, ``[B, 1 + pos_k + neg_k, D]`` (no gradient flows).
        weights: ``[P, B]`` per-sample pair weights in the official pair order (i, then j != i, then
            stage k of i, then stage z of j); ones without the weight network. Gradients flow into them
            (the meta step's inner objective); the main step passes them without.
        tau: Contrastive temperature (official 0.07).
        kd_temperature: Temperature of the weighted KL terms (official 3).
        pos_k: Same-class positives per image (official 1).
        official_vcl: Read ``M_a`` for both intra-network logits, as the official code does.
    """
    n = len(embeddings)
    with torch.autocast(rows[0].device.type, enabled=False):
        emb = [[at_least_fp32(e) for e in stages] for stages in embeddings]
        rows = [at_least_fp32(r.detach()) for r in rows]
        weights = at_least_fp32(weights)  # with gradient in the meta step's inner objective
        # prod[i][j][s] = M_i[idx] . e_js / tau: [B, K], each computed once
        prod = [[[torch.bmm(rows[i], e.unsqueeze(-1)).squeeze(-1) / tau for e in emb[j]] for j in range(n)]
                for i in range(n)]
        vcl = svcl = icl = sicl = weights.new_zeros(())
        count = 0
        for a in range(n):
            for b in range(n):
                if a == b:
                    continue
                for k in range(len(emb[a])):
                    for z in range(len(emb[b])):
                        w = weights[count]
                        count += 1
                        l_ab, l_ba = prod[a][b][z], prod[b][a][k]
                        sicl = sicl + weighted_kl(l_ab, l_ba, w, kd_temperature) + weighted_kl(l_ba, l_ab, w, kd_temperature)
                        icl = icl + positive_nll(l_ab, pos_k + 1, w) + positive_nll(l_ba, pos_k + 1, w)
                        intra_a = prod[a][a][k][:, 1:]
                        intra_b = (prod[a][b][z] if official_vcl else prod[b][b][z])[:, 1:]
                        svcl = svcl + weighted_kl(intra_a, intra_b, w, kd_temperature) \
                            + weighted_kl(intra_b, intra_a, w, kd_temperature)
                        vcl = vcl + positive_nll(intra_a, pos_k, w) + positive_nll(intra_b, pos_k, w)
        if count != weights.shape[0]:
            raise ValueError(f"{weights.shape[0]} pair weights for {count} pairs of networks and stages")
    return {"vcl": vcl, "svcl": svcl, "icl": icl, "sicl": sicl}


def weighted_pairs(embeddings: list[list[torch.Tensor]], weights: torch.Tensor):
    """``(a, b, e_a, e_b, w)`` for every ordered pair of different networks and every pair of their stages, with
    its pair weight, in the official loop order (``weights`` ``[N (N - 1) S^2]``).

    Raises:
        ValueError: ``weights`` has not one entry per pair.
    """
    n, count = len(embeddings), 0
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    total = sum(len(embeddings[a]) * len(embeddings[b]) for a, b in pairs)
    if total != weights.shape[0]:
        raise ValueError(f"{weights.shape[0]} pair weights for {total} pairs of networks and stages")
    for a, b in pairs:
        for e_a in embeddings[a]:
            for e_b in embeddings[b]:
                yield a, b, e_a, e_b, weights[count]
                count += 1


def lmcl_memory_losses_per_pair(embeddings: list[list[torch.Tensor]], banks: list[torch.Tensor], idx: torch.Tensor,
                                 weights: torch.Tensor, tau: float = 0.07, kd_temperature: float = 3.0, pos_k: int = 1,
                                 official_vcl: bool = True) -> dict[str, torch.Tensor]:
    """``lmcl_memory_losses`` computed the official way: per pair of networks and stages, its own gathers from
    the banks (``[N, D]`` each, by ``idx`` ``[B, K]``) and four products (``--fused_loss False``)."""
    with torch.autocast(idx.device.type, enabled=False):
        weights = at_least_fp32(weights)
        vcl = svcl = icl = sicl = weights.new_zeros(())
        for a, b, e_a, e_b, w in weighted_pairs(embeddings, weights):
            e_a32, e_b32 = at_least_fp32(e_a), at_least_fp32(e_b)
            rows_a, rows_b = banks[a][idx].detach(), banks[b][idx].detach()  # [B, K, D] each pair
            l_ab = torch.bmm(rows_a, e_b32.unsqueeze(-1)).squeeze(-1) / tau
            l_ba = torch.bmm(rows_b, e_a32.unsqueeze(-1)).squeeze(-1) / tau
            sicl = sicl + weighted_kl(l_ab, l_ba, w, kd_temperature) + weighted_kl(l_ba, l_ab, w, kd_temperature)
            icl = icl + positive_nll(l_ab, pos_k + 1, w) + positive_nll(l_ba, pos_k + 1, w)
            intra_rows_b = rows_a if official_vcl else rows_b
            intra_a = torch.bmm(rows_a[:, 1:], e_a32.unsqueeze(-1)).squeeze(-1) / tau
            intra_b = torch.bmm(intra_rows_b[:, 1:], e_b32.unsqueeze(-1)).squeeze(-1) / tau
            svcl = svcl + weighted_kl(intra_a, intra_b, w, kd_temperature) + weighted_kl(intra_b, intra_a, w, kd_temperature)
            vcl = vcl + positive_nll(intra_a, pos_k, w) + positive_nll(intra_b, pos_k, w)
    return {"vcl": vcl, "svcl": svcl, "icl": icl, "sicl": sicl}


def lmcl_classification_losses(logits: list[list[torch.Tensor]], aggregated: list[torch.Tensor], labels: torch.Tensor,
                               kd_temperature: float = 3.0) -> dict[str, torch.Tensor]:
    """``cls``: cross-entropy of every stage's and every aggregated classifier; ``kd``: every network's last
    classifier towards every network's aggregated logits (itself included, as official), ``T^2 KL`` batch mean."""
    with torch.autocast(labels.device.type, enabled=False):
        logits = [[at_least_fp32(x) for x in stages] for stages in logits]
        aggregated = [at_least_fp32(x) for x in aggregated]
        cls = sum(F.cross_entropy(x, labels) for stages in logits for x in stages)
        cls = cls + sum(F.cross_entropy(x, labels) for x in aggregated)
        kd = sum(kd_kl(stages[-1], agg, kd_temperature) for stages in logits for agg in aggregated)
    return {"cls": cls, "kd": kd}


def _positive_mean_nll(logits: torch.Tensor, positives: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``-1/B sum_n w_n sum_m P_nm lp_nm / sum_m P_nm``, ``lp`` normalised over the off-diagonal columns.

    A row with no positive (its class alone in the batch) counts 0: the official code divides 0 by 0
    there and relies on its class sampler (two images per class) never to produce one.
    """
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    count = positives.sum(dim=1)
    per_row = (positives * log_prob).sum(dim=1) / count.clamp_min(1)
    return -(weight * per_row).mean()


def lmcl_batch_losses(embeddings: list[list[torch.Tensor]], labels: torch.Tensor, weights: torch.Tensor,
                      tau: float = 0.1, kd_temperature: float = 3.0) -> dict[str, torch.Tensor]:
    """L-MCL's in-batch form (the official CIFAR criterion, ``SupMCL``): the same four terms over the batch.

    For an ordered pair of networks (a, b) and stages (k, z): inter-network logits ``e_a e_b^T / tau`` and
    ``e_b e_a^T / tau``, intra-network ``e_a e_a^T / tau`` and ``e_b e_b^T / tau`` (``[B, B]``); positives
    are the other images of the same class (the diagonal excluded, also from the normaliser, so the same
    image seen by the other network is neither: the official quirk), the KL terms run over every column.
    """
    with torch.autocast(labels.device.type, enabled=False):
        emb = [[at_least_fp32(e) for e in stages] for stages in embeddings]
        weights = at_least_fp32(weights)
        same = labels[:, None] == labels[None, :]
        positives = (same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)).to(weights.dtype)
        vcl = svcl = icl = sicl = weights.new_zeros(())
        for _, _, ea, eb, w in weighted_pairs(emb, weights):
            l_ab, l_ba = ea @ eb.T / tau, eb @ ea.T / tau
            l_aa, l_bb = ea @ ea.T / tau, eb @ eb.T / tau
            sicl = sicl + weighted_kl(l_ab, l_ba, w, kd_temperature) + weighted_kl(l_ba, l_ab, w, kd_temperature)
            icl = icl + _positive_mean_nll(l_ab, positives, w) + _positive_mean_nll(l_ba, positives, w)
            svcl = svcl + weighted_kl(l_aa, l_bb, w, kd_temperature) + weighted_kl(l_bb, l_aa, w, kd_temperature)
            vcl = vcl + _positive_mean_nll(l_aa, positives, w) + _positive_mean_nll(l_bb, positives, w)
    return {"vcl": vcl, "svcl": svcl, "icl": icl, "sicl": sicl}
