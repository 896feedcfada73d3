"""A transcription of MCL-MoCo's official step (winycg/MCL @ 236da2f, ``moco/builder_mcl.py``), for parity tests.

Written from the official ``MoCo.forward`` of the specification: the key encoders' momentum update at
the start of the forward (``param_k.data = param_k.data * m + param_q.data * (1 - m)``), normalised
queries and keys, einsum logits against the ``[N, D, K]`` queue, ``nn.CrossEntropyLoss`` and
``KLDiv(T=3)`` (``kl_div(log_softmax(s/T), softmax(t/T), 'batchmean') * T**2``) summed as the
official loops do, then the enqueue (asserting ``K % B == 0``). One process, so the batch shuffle is
the identity. The official layouts and loop order, not our forms.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class KLDiv(nn.Module):
    def __init__(self, T: float) -> None:
        super().__init__()
        self.T = T

    def forward(self, y_s: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        p_s = F.log_softmax(y_s / self.T, dim=1)
        p_t = F.softmax(y_t / self.T, dim=1)
        return F.kl_div(p_s, p_t, reduction="batchmean") * (self.T ** 2)


def official_terms(queries, keys, queue_ndk: torch.Tensor, T: float = 0.07):
    """The four terms of ``MoCo.forward`` from normalised queries and keys; ``queue_ndk`` is ``[N, D, K]``."""
    n = len(queries)
    ce, kl = nn.CrossEntropyLoss(), KLDiv(T=3)
    intra = []
    for i in range(n):
        l_pos = torch.einsum("nc,nc->n", [queries[i], keys[i]]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [queries[i], queue_ndk[i].clone().detach()])
        intra.append(torch.cat([l_pos, l_neg], dim=1) / T)
    labels = torch.zeros(intra[0].shape[0], dtype=torch.long)
    vcl = sum(ce(intra[i], labels) for i in range(n))
    svcl = sum(kl(intra[i], intra[j].detach()) for i in range(n) for j in range(n) if i != j)
    icl, sicl = 0.0, 0.0
    for i in range(n):
        for j in range(i + 1, n):
            l_ij = torch.cat([torch.einsum("nc,nc->n", [queries[i], keys[j]]).unsqueeze(-1),
                              torch.einsum("nc,ck->nk", [queries[i], queue_ndk[j].clone().detach()])], dim=1) / T
            l_ji = torch.cat([torch.einsum("nc,nc->n", [queries[j], keys[i]]).unsqueeze(-1),
                              torch.einsum("nc,ck->nk", [queries[j], queue_ndk[i].clone().detach()])], dim=1) / T
            icl = icl + ce(l_ij, labels) + ce(l_ji, labels)
            sicl = sicl + kl(l_ij, l_ji.detach()) + kl(l_ji, l_ij.detach())
    return vcl, svcl, icl, sicl


class OfficialMCL:
    """``MoCo.forward`` around given query and key encoders (lists of modules) and a ``[N, D, K]`` queue."""

    def __init__(self, encoders_q, encoders_k, queue_ndk: torch.Tensor, m: float = 0.999, T: float = 0.07) -> None:
        self.q, self.k = encoders_q, encoders_k
        self.queue = queue_ndk.clone()
        self.ptr = [0] * len(encoders_q)
        self.m, self.T = m, T

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for enc_q, enc_k in zip(self.q, self.k):
            for param_q, param_k in zip(enc_q.parameters(), enc_k.parameters()):
                param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

    def loss(self, im_q: torch.Tensor, im_k: torch.Tensor) -> torch.Tensor:
        queries = [F.normalize(enc(im_q), dim=1) for enc in self.q]
        with torch.no_grad():
            self._momentum_update()
            keys = [F.normalize(enc(im_k), dim=1) for enc in self.k]
        vcl, svcl, icl, sicl = official_terms(queries, keys, self.queue, self.T)
        for i, key in enumerate(keys):
            batch = key.shape[0]
            assert self.queue.shape[2] % batch == 0
            self.queue[i, :, self.ptr[i]:self.ptr[i] + batch] = key.T
            self.ptr[i] = (self.ptr[i] + batch) % self.queue.shape[2]
        return vcl + svcl + icl + sicl
