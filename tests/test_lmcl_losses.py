"""L-MCL's criterion, memory banks and sampler against a transcription of the official ImageNet criterion."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mokd_fast.methods.lmcl.losses import lmcl_classification_losses, lmcl_memory_losses
from mokd_fast.methods.lmcl.memory import ClassSampler, MemoryBanks
from tests.official_lmcl import distill_kl, sup_mcl_terms, update_memory

B, D, N_DATA, NEG = 6, 16, 40, 12


def _setup(n_net: int = 2, stages: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    banks = MemoryBanks(n_net, N_DATA, D, seed=seed)
    labels = torch.arange(N_DATA) % 5
    sampler = ClassSampler(labels)
    own = torch.randperm(N_DATA, generator=gen)[:B]
    idx = sampler.sample(own, 1, NEG, seed=3, step=7)
    emb = [[F.normalize(torch.randn(B, D, generator=gen), dim=1).requires_grad_() for _ in range(stages)]
           for _ in range(n_net)]
    pairs = n_net * (n_net - 1) * stages * stages
    weights = torch.rand(pairs, B, generator=gen)
    return banks, labels, own, idx, emb, weights


@pytest.mark.parametrize("official_vcl", [True, False])
@pytest.mark.parametrize("n_net", [2, 3])
def test_memory_terms_and_gradients_equal_the_official_criterion(n_net, official_vcl) -> None:
    banks, _, _, idx, emb, weights = _setup(n_net)
    ours = lmcl_memory_losses(emb, banks.rows(idx), weights, official_vcl=official_vcl)
    ref_emb = [[e.detach().clone().requires_grad_() for e in stages] for stages in emb]
    memories = [banks.bank(i).clone() for i in range(n_net)]
    ref = sup_mcl_terms(memories, ref_emb, idx[:, :2], idx[:, 2:], weights, own_memory_for_b=not official_vcl)
    for name, value in zip(("vcl", "svcl", "icl", "sicl"), ref):
        assert abs(ours[name].item() - value.item()) <= 1e-5 * max(1.0, abs(value.item())), (name, ours[name], value)
    sum(ours.values()).backward()
    sum(ref).backward()
    for stages, ref_stages in zip(emb, ref_emb):
        for a, b in zip(stages, ref_stages):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_the_official_vcl_reads_network_as_memory_for_both() -> None:
    """The flag matters: with distinct banks the two forms give different intra-network terms."""
    banks, _, _, idx, emb, weights = _setup()
    official = lmcl_memory_losses(emb, banks.rows(idx), weights, official_vcl=True)
    fixed = lmcl_memory_losses(emb, banks.rows(idx), weights, official_vcl=False)
    assert abs(official["vcl"].item() - fixed["vcl"].item()) > 1e-4
    assert official["icl"].item() == pytest.approx(fixed["icl"].item(), rel=1e-6)


def test_the_memory_update_equals_the_official_one() -> None:
    banks, _, own, idx, emb, _ = _setup()
    memories = [banks.bank(i).clone() for i in range(2)]
    last = [stages[-1].detach() for stages in emb]
    banks.update(last, own)
    update_memory(memories, copy.deepcopy(last), idx)
    for i in range(2):
        torch.testing.assert_close(banks.bank(i), memories[i], rtol=1e-6, atol=1e-7)
    assert torch.allclose(banks.bank(0)[own].norm(dim=1), torch.ones(B))


def test_the_sampler_draws_same_class_positives_and_other_class_negatives() -> None:
    """The ``others`` law (this project's before 2026-12-04): the positive is never the image itself."""
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 1 + [3] * 9)[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    sampler = ClassSampler(labels)
    own = torch.arange(20)
    idx = sampler.sample(own, 1, 500, seed=0, step=0, positives="others")
    assert idx.shape == (20, 502) and torch.equal(idx[:, 0], own)
    pos, neg = idx[:, 1], idx[:, 2:]
    assert torch.equal(labels[pos], labels[own])
    single = labels[own] == 2  # a class of one image: the positive is the image itself
    assert torch.equal(pos[single], own[single]) and bool((pos[~single] != own[~single]).all())
    assert bool((labels[neg] != labels[own][:, None]).all())
    for i in range(20):  # with replacement, uniform over the other classes' images
        others = set(torch.nonzero(labels != labels[i]).flatten().tolist())
        assert set(neg[i].tolist()) == others
    again = sampler.sample(own, 1, 500, seed=0, step=0, positives="others")
    assert torch.equal(idx, again) and not torch.equal(idx, sampler.sample(own, 1, 500, seed=0, step=1,
                                                                           positives="others"))


def _tuple_frequencies(draws: torch.Tensor) -> dict[tuple[int, ...], float]:
    keys, counts = torch.unique(draws, dim=0, return_counts=True)
    return {tuple(k.tolist()): c.item() / len(draws) for k, c in zip(keys, counts, strict=True)}


@pytest.mark.parametrize("pos_k", [1, 2, 3])
def test_the_official_positive_law_is_numpys_choice_without_replacement(pos_k: int) -> None:
    """The official ``np.random.choice(cls_positive[target], pos_k, replace=False)``: every ordered
    tuple of distinct class members, the image itself included, equally likely. Measured against
    numpy's own draws of that call, and against the exact law (within 5 binomial sigmas)."""
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 2, 1, 0, 2, 2])  # class 0: {1, 3, 4, 8}, class 1: {0, 2, 5, 7}
    sampler = ClassSampler(labels)
    own = torch.tensor([3, 5])  # one image of class 0, one of class 1
    steps = 4000
    draws = torch.stack([sampler.sample(own, pos_k, 4, seed=1, step=k)[:, 1:1 + pos_k] for k in range(steps)])
    rng = np.random.default_rng(0)
    for row, members in ((0, [1, 3, 4, 8]), (1, [0, 2, 5, 7])):
        ours = _tuple_frequencies(draws[:, row])
        official = _tuple_frequencies(torch.tensor(np.stack([rng.choice(members, pos_k, replace=False)
                                                             for _ in range(steps)])))
        exact = 1 / math.perm(len(members), pos_k)
        sigma = math.sqrt(exact * (1 - exact) / steps)
        assert ours.keys() == official.keys() == set(itertools.permutations(members, pos_k))
        assert all(abs(f - exact) < 5 * sigma for f in ours.values()), (row, ours)
        assert all(abs(ours[t] - official[t]) < 5 * math.sqrt(2) * sigma for t in ours)
    assert torch.equal(draws, torch.stack([sampler.sample(own, pos_k, 4, seed=1, step=k)[:, 1:1 + pos_k]
                                           for k in range(steps)]))  # seeded by (seed, step)


def test_the_official_law_needs_pos_k_images_in_every_class() -> None:
    sampler = ClassSampler(torch.tensor([0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="--pos_k 3 needs every class to hold at least 3 images"):
        sampler.sample(torch.tensor([0, 2]), 3, 4, seed=0, step=0)


def test_classification_terms_equal_the_official_sums() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = [[torch.randn(B, 10, generator=gen) for _ in range(4)] for _ in range(2)]
    agg = [torch.randn(B, 10, generator=gen) for _ in range(2)]
    y = torch.randint(0, 10, (B,), generator=gen)
    ours = lmcl_classification_losses(logits, agg, y)
    cls = sum(F.cross_entropy(x, y) for s in logits for x in s) + sum(F.cross_entropy(a, y) for a in agg)
    kd = sum(distill_kl(logits[i][-1], agg[j]) for i in range(2) for j in range(2))
    assert ours["cls"].item() == pytest.approx(cls.item(), rel=1e-6)
    assert ours["kd"].item() == pytest.approx(kd.item(), rel=1e-6)


def test_terms_are_fp32_under_bf16_autocast() -> None:
    banks, _, _, idx, emb, weights = _setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = lmcl_memory_losses([[e.bfloat16() for e in s] for s in emb], banks.rows(idx), weights)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())


def test_in_batch_terms_equal_the_official_cifar_criterion() -> None:
    """Every class twice in the batch (the official MPerClassSampler's guarantee), random pair weights."""
    from mokd_fast.methods.lmcl.losses import lmcl_batch_losses
    from tests.official_lmcl import sup_mcl_batch_terms

    _, _, _, _, emb, weights = _setup()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ours = lmcl_batch_losses(emb, labels, weights)
    ref_emb = [[e.detach().clone().requires_grad_() for e in stages] for stages in emb]
    ref = sup_mcl_batch_terms(ref_emb, labels, weights)
    for name, value in zip(("vcl", "svcl", "icl", "sicl"), ref):
        assert abs(ours[name].item() - value.item()) <= 1e-5 * max(1.0, abs(value.item())), (name, ours[name], value)
    sum(ours.values()).backward()
    sum(ref).backward()
    for stages, ref_stages in zip(emb, ref_emb):
        for a, b in zip(stages, ref_stages):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_in_batch_rows_without_a_positive_count_zero_instead_of_nan() -> None:
    from mokd_fast.methods.lmcl.losses import lmcl_batch_losses

    _, _, _, _, emb, weights = _setup()
    terms = lmcl_batch_losses(emb, torch.tensor([0, 0, 1, 2, 3, 4]), weights)
    assert all(torch.isfinite(t) for t in terms.values())


@pytest.mark.parametrize("official_vcl", [True, False])
def test_the_per_pair_form_equals_the_fused_one(official_vcl) -> None:
    """--fused_loss False (official gathers and products per pair) gives the fused form's terms and gradients."""
    from mokd_fast.methods.lmcl.losses import lmcl_memory_losses_per_pair

    banks, _, _, idx, emb, weights = _setup()
    fused = lmcl_memory_losses(emb, banks.rows(idx), weights, official_vcl=official_vcl)
    ref_emb = [[e.detach().clone().requires_grad_() for e in stages] for stages in emb]
    plain = lmcl_memory_losses_per_pair(ref_emb, [banks.bank(i) for i in range(2)], idx, weights,
                                        official_vcl=official_vcl)
    for name in fused:
        assert fused[name].item() == pytest.approx(plain[name].item(), rel=1e-6)
    sum(fused.values()).backward()
    sum(plain.values()).backward()
    for stages, ref_stages in zip(emb, ref_emb):
        for a, b in zip(stages, ref_stages):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
