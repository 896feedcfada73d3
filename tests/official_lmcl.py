"""A transcription of L-MCL's official contrastive criterion (winycg/L-MCL @ 2c0901e,
``losses/imagenet_sup_layer_mcl_meta_loss.py``: ``ContrastMemory``, ``Sup_MCL_Loss_Meta``, ``KLDiv``;
``utils.py: DistillKL``), for parity tests.

The official layouts and loops: one ``ContrastMemory.forward`` per ordered pair of networks and pair
of stages (``index_select`` from the memories, ``bmm``, the naive ``log(sum(exp))``, the masks, the
weighted KL), ``memory_a`` for both intra-network logits (the official VCL), then the memory update
from the last stage. One process (the all-gathers are the identity); no ``.cuda()``. Embeddings are
passed already projected (the official criterion projects them in place first).
"""

import torch
import torch.nn.functional as F


class WeightedKLDiv:
    def __init__(self, T: float) -> None:
        self.T = T

    def __call__(self, y_s, y_t, weights=None):
        log_p_s = F.log_softmax(y_s / self.T, dim=1)
        log_p_t = F.log_softmax(y_t / self.T, dim=1)
        p_t = F.softmax(y_t / self.T, dim=1)
        if weights is not None:
            return (self.T ** 2) * (weights * p_t * (log_p_t - log_p_s)).sum() / p_t.size(0)
        return F.kl_div(log_p_s, p_t, reduction="batchmean") * (self.T ** 2)


def distill_kl(y_s, y_t, T: float = 3.0):
    """``utils.DistillKL``: ``kl_div(log_softmax(s/T), softmax(t/T), sum) * T**2 / B``."""
    p_s = F.log_softmax(y_s / T, dim=1)
    p_t = F.softmax(y_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T ** 2) / y_s.shape[0]


def contrast_memory(memories, e_a, e_b, a, b, pos_idx, neg_idx, weight, tau=0.07, kd_T=3.0, pos_k=1,
                    own_memory_for_b=False):
    """``ContrastMemory.forward`` for one pair; ``own_memory_for_b`` reads ``memory_b`` for ``e_b``'s intra logits."""
    kl = WeightedKLDiv(kd_T)
    batch, dim = e_a.shape
    idx = torch.cat([pos_idx, neg_idx], dim=1)
    K = idx.shape[1]
    inter = []
    rep = torch.index_select(memories[a], 0, idx.view(-1)).detach().view(batch, K, dim)
    inter.append(torch.bmm(rep, e_b.view(batch, dim, 1)).squeeze(-1) / tau)
    rep = torch.index_select(memories[b], 0, idx.view(-1)).detach().view(batch, K, dim)
    inter.append(torch.bmm(rep, e_a.view(batch, dim, 1)).squeeze(-1) / tau)
    sicl = kl(inter[0], inter[1].detach(), weight) + kl(inter[1], inter[0].detach(), weight)
    mask = torch.zeros(batch, K)
    mask[:, :pos_k + 1] = 1.0
    icl = 0.0
    for logit in inter:
        log_prob = logit - torch.log(torch.exp(logit).sum(1, keepdim=True))
        icl = icl - ((mask * log_prob * weight).sum(1) / mask.sum(1)).mean()
    idx = idx[:, 1:].contiguous()
    K = idx.shape[1]
    intra = []
    rep_a = torch.index_select(memories[a], 0, idx.view(-1)).detach().view(batch, K, dim)
    intra.append(torch.bmm(rep_a, e_a.view(batch, dim, 1)).squeeze(-1) / tau)
    rep_b = torch.index_select(memories[b if own_memory_for_b else a], 0, idx.view(-1)).detach().view(batch, K, dim)
    intra.append(torch.bmm(rep_b, e_b.view(batch, dim, 1)).squeeze(-1) / tau)
    svcl = kl(intra[0], intra[1].detach(), weight) + kl(intra[1], intra[0].detach(), weight)
    mask = torch.zeros(batch, K)
    mask[:, :pos_k] = 1.0
    vcl = 0.0
    for logit in intra:
        log_prob = logit - torch.log(torch.exp(logit).sum(1, keepdim=True))
        vcl = vcl - ((mask * log_prob * weight).sum(1) / mask.sum(1)).mean()
    return vcl, svcl, icl, sicl


def sup_mcl_terms(memories, embeddings, pos_idx, neg_idx, weights, **kw):
    """``Sup_MCL_Loss_Meta.forward`` after the projection: the four sums over ordered pairs and stage pairs."""
    totals = [0.0, 0.0, 0.0, 0.0]
    count = 0
    n = len(embeddings)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            for k in range(len(embeddings[i])):
                for z in range(len(embeddings[j])):
                    terms = contrast_memory(memories, embeddings[i][k], embeddings[j][z], i, j, pos_idx, neg_idx,
                                            weights[count].unsqueeze(-1), **kw)
                    count += 1
                    totals = [t + x for t, x in zip(totals, terms)]
    return tuple(totals)


@torch.no_grad()
def update_memory(memories, last_embeddings, pos_idx, momentum=0.5):
    """``ContrastMemory.update_memory`` in one process: momentum 0.5 toward the last-stage embeddings, renormalised."""
    own = pos_idx[:, 0].contiguous()
    for i, emb in enumerate(last_embeddings):
        pos = torch.index_select(memories[i], 0, own.view(-1))
        pos.mul_(momentum)
        pos.add_(torch.mul(emb, 1 - momentum))
        updated = pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5))
        memories[i].index_copy_(0, own, updated)


def official_step_loss(learners, x, y, idx, memories, weights, alpha=0.01, gamma=1.0, beta=0.01, lam=1.0, kd_T=3.0):
    """``main_layer_mcl_imagenet_meta.train``'s loss for one batch, then its memory update.

    ``learners`` holds the networks (``nets``), the criterion heads (``embeds``) and the aggregator,
    called the official way: the aggregator on the raw stage features, the projections after it.
    """
    embeddings, logits = zip(*(net(x) for net in learners.nets))
    embeddings, logits = [list(e) for e in embeddings], [list(lg) for lg in logits]
    loss_cls = 0.0
    for i in range(len(logits)):
        for j in range(len(logits[i])):
            loss_cls = loss_cls + F.cross_entropy(logits[i][j], y)
    aggregated = learners.aggregator(embeddings, logits)
    for i in range(len(logits)):
        loss_cls = loss_cls + F.cross_entropy(aggregated[i], y)
    loss_kd = 0.0
    for i in range(len(logits)):
        for j in range(len(logits)):
            loss_kd = loss_kd + distill_kl(logits[i][-1], aggregated[j].detach(), kd_T)
    projected = [[learners.embeds[i][j](embeddings[i][j]) for j in range(len(embeddings[i]))]
                 for i in range(len(embeddings))]
    vcl, svcl, icl, sicl = sup_mcl_terms(memories, projected, idx[:, :2], idx[:, 2:], weights)
    update_memory(memories, [p[-1].detach() for p in projected], idx)
    return loss_cls + loss_kd + alpha * vcl + gamma * svcl + beta * icl + lam * sicl


class OfficialMetaSGD(torch.optim.SGD):
    """``losses/meta_optimizers.py: MetaSGD`` with ``rollback=True``: records (state, objective) per step, then
    replays them in reverse with ``create_graph`` in ``meta_backward``; the modules and the optimiser end in
    the state of the first recorded step."""

    def __init__(self, params, modules, lr=0.1, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr, momentum=momentum, weight_decay=weight_decay)
        self.prev_states = []
        self.modules_ = modules + [self]

    def parameters(self):
        for pg in self.param_groups:
            yield from pg["params"]

    def get_state(self):
        import copy

        return copy.deepcopy([m.state_dict() for m in self.modules_])

    def set_state(self, state):
        for m, s in zip(self.modules_, state):
            m.load_state_dict(s)

    def step(self, objective=None, *args):
        if objective is not None:
            self.prev_states.append((self.get_state(), objective, args))
            objective(*args).backward()
        super().step()

    def meta_backward(self):
        alpha_groups = []
        for pg in self.param_groups:
            alpha_groups.append([])
            for p in pg["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p.data)
                alpha_groups[-1].append((p.grad.data.clone(), torch.zeros_like(p.grad.data)))
        for state, objective, args in reversed(self.prev_states):
            self.set_state(state)
            loss = objective(*args)
            grad = torch.autograd.grad(loss, list(self.parameters()), create_graph=True, allow_unused=True)
            grad = dict(zip(self.parameters(), grad))
            X = 0.0
            for pg, ag in zip(self.param_groups, alpha_groups):
                for p, a in zip(pg["params"], ag):
                    if grad[p] is not None:
                        X = X + grad[p].mul(a[0].mul(-pg["lr"]) + a[1]).sum()
            self.zero_grad()
            X.backward()
            for pg, ag in zip(self.param_groups, alpha_groups):
                lr, wd, momentum = pg["lr"], pg["weight_decay"], pg["momentum"]
                for p, a in zip(pg["params"], ag):
                    g = p.grad.data if p.grad is not None else torch.zeros_like(p.data)
                    new = (a[0].mul(1 - lr * wd).add_(a[1]).add_(g), a[1].mul(momentum).add_(a[0], alpha=-lr * momentum))
                    a[0].copy_(new[0])
                    a[1].copy_(new[1])
        self.prev_states = []


def official_meta_step(learners, weight_net, banks, x, y, idx, lr, times=2, alpha=0.01, gamma=1.0, beta=0.01, lam=1.0):
    """The meta block of ``train()``: ``times`` MetaSGD steps on ``inner_objective``, one on ``outer_objective``,
    the outer backward, ``meta_backward``; returns the weight network's gradient (before its optimiser step)."""
    memories = [banks.bank(i) for i in range(banks.networks)]  # the buffers themselves: load_state_dict copies into them

    def inner_objective():
        embeddings = [list(net(x)[0]) for net in learners.nets]
        weights = weight_net(embeddings)
        projected = [[learners.embeds[i][j](embeddings[i][j]) for j in range(len(embeddings[i]))]
                     for i in range(len(embeddings))]
        vcl, svcl, icl, sicl = sup_mcl_terms(memories, projected, idx[:, :2], idx[:, 2:], weights)
        update_memory(memories, [p[-1].detach() for p in projected], idx)
        return alpha * vcl + gamma * svcl + beta * icl + lam * sicl

    def outer_objective():
        loss = 0.0
        for net in learners.nets:
            for logit in net(x)[1]:
                loss = loss + F.cross_entropy(logit, y)
        return loss

    params = list(learners.nets.parameters()) + list(learners.embeds.parameters())
    meta = OfficialMetaSGD(params, [learners.nets, learners.embeds, banks], lr=lr, momentum=0.9, weight_decay=1e-4)
    for _ in range(times):
        meta.zero_grad()
        meta.step(inner_objective)
    meta.zero_grad()
    meta.step(outer_objective)
    meta.zero_grad()
    weight_net.zero_grad()
    outer_objective().backward()
    meta.meta_backward()
    return [p.grad.clone() for p in weight_net.parameters()]


def sup_mcl_batch_terms(embeddings, labels, weights, tau=0.1, kd_T=3.0):
    """``losses/cifar_sup_layer_mcl_meta_loss.py``: ``SupMCL.forward`` summed over pairs as ``Sup_MCL_Loss_Meta``."""
    kl = WeightedKLDiv(kd_T)
    labels = labels.unsqueeze(0)
    intra_mask = torch.eq(labels, labels.T).float() - torch.eye(labels.size(1))
    diag_mask = 1.0 - torch.eye(labels.size(1))
    totals = [0.0, 0.0, 0.0, 0.0]
    count = 0
    n = len(embeddings)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            for e_a in embeddings[i]:
                for e_b in embeddings[j]:
                    weight = weights[count].unsqueeze(-1)
                    count += 1
                    inter = [torch.mm(e_a, e_b.T) / tau, torch.mm(e_b, e_a.T) / tau]
                    sicl = kl(inter[0], inter[1].detach(), weight) + kl(inter[1], inter[0].detach(), weight)
                    icl = 0.0
                    for logit in inter:
                        log_prob = logit - torch.log((torch.exp(logit) * diag_mask).sum(1, keepdim=True))
                        icl = icl - ((intra_mask * log_prob * weight).sum(1) / intra_mask.sum(1)).mean()
                    intra = [torch.mm(e_a, e_a.T) / tau, torch.mm(e_b, e_b.T) / tau]
                    svcl = kl(intra[0], intra[1].detach(), weight) + kl(intra[1], intra[0].detach(), weight)
                    vcl = 0.0
                    for logit in intra:
                        log_prob = logit - torch.log((torch.exp(logit) * diag_mask).sum(1, keepdim=True))
                        vcl = vcl - ((intra_mask * log_prob * weight).sum(1) / intra_mask.sum(1)).mean()
                    totals = [t + x for t, x in zip(totals, (vcl, svcl, icl, sicl))]
    return tuple(totals)
