"""MCL-MoCo's four terms against the official module's arithmetic: values, gradients, N peers, fp32 under autocast."""

import pytest
import torch
import torch.nn.functional as F

from mokd_fast.methods.mcl.losses import mcl_moco_losses
from tests.official_mcl import official_terms

B, D, K = 6, 16, 32


def _inputs(n: int, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = [F.normalize(torch.randn(B, D, generator=gen, dtype=dtype), dim=1).requires_grad_() for _ in range(n)]
    # keys near their queries, so the positives carry mass and the KL terms are far from trivial
    k = [F.normalize(x.detach() + 0.3 * torch.randn(B, D, generator=gen, dtype=dtype), dim=1) for x in q]
    queues = [F.normalize(torch.randn(K, D, generator=gen, dtype=dtype), dim=1) for _ in range(n)]
    return q, k, queues


@pytest.mark.parametrize("n", [2, 3])
def test_terms_and_gradients_equal_the_official_module(n) -> None:
    q, k, queues = _inputs(n)
    ours = mcl_moco_losses(q, k, queues)
    q_ref = [x.detach().clone().requires_grad_() for x in q]
    ref = official_terms(q_ref, k, torch.stack([Q.T for Q in queues]))
    for name, value in zip(("vcl", "svcl", "icl", "sicl"), ref):
        assert abs(ours[name].item() - value.item()) <= 1e-5, (name, ours[name].item(), value.item())
    sum(ours.values()).backward()
    sum(ref).backward()
    for a, b in zip(q, q_ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_in_batch_negatives_are_moco_v3s_contrast_at_each_ranks_offset() -> None:
    """--negatives batch: each query against every key of the global batch, its own image's key the positive; a
    rank holding rows 6-11 of a 12-image batch gets the same terms as the rows' share of one process's."""
    q, k, _ = _inputs(2)
    t, kd_t = 0.2, 3.0
    own = [q[i] @ k[i].T / t for i in range(2)]  # [B, B]
    cross = [q[0] @ k[1].T / t, q[1] @ k[0].T / t]
    target = torch.arange(B)

    def kl(s_logits, t_logits):
        return F.kl_div(F.log_softmax(s_logits / kd_t, 1), F.softmax(t_logits / kd_t, 1), reduction="batchmean") * kd_t ** 2
    want = {"vcl": F.cross_entropy(own[0], target) + F.cross_entropy(own[1], target),
            "svcl": kl(own[0], own[1].detach()) + kl(own[1], own[0].detach()),
            "icl": F.cross_entropy(cross[0], target) + F.cross_entropy(cross[1], target),
            "sicl": kl(cross[0], cross[1].detach()) + kl(cross[1], cross[0].detach())}
    got = mcl_moco_losses(q, k, None, t, kd_t)
    for name, value in want.items():
        assert abs(got[name].item() - value.item()) <= 1e-5, name
    assert got["icl"].item() != pytest.approx(got["vcl"].item())  # the cross terms read the other peer's keys
    # a second rank: its queries are rows B..2B-1 of a global batch whose keys are [k_rank0; k_rank1]
    q2, k2, _ = _inputs(2, seed=1)
    gathered = [torch.cat([a, b]) for a, b in zip(k, k2)]  # [2B, D]
    rank1 = mcl_moco_losses(q2, gathered, None, t, kd_t, first_key=B)
    logits = q2[0] @ gathered[0].T / t  # [B, 2B]
    assert abs(rank1["vcl"].item() - F.cross_entropy(logits, B + target).item()
               - F.cross_entropy(q2[1] @ gathered[1].T / t, B + target).item()) <= 1e-5


def test_keys_and_queues_get_no_gradient() -> None:
    q, k, queues = _inputs(2)
    k = [x.requires_grad_() for x in k]
    sum(mcl_moco_losses(q, k, queues).values()).backward()
    assert all(x.grad is None for x in k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_terms_are_fp32_under_autocast_where_fp16_would_overflow(dtype) -> None:
    """exp(1/0.07) summed over 65,537 columns is past fp16's 65504: the logits must stay fp32."""
    q, k, queues = _inputs(2)
    with torch.autocast("cpu", dtype=dtype):
        terms = mcl_moco_losses([x.to(dtype) for x in q], [x.to(dtype) for x in k], queues)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())
    ref = mcl_moco_losses([x.to(dtype).float() for x in q], [x.to(dtype).float() for x in k], queues)
    for name in terms:
        assert abs(terms[name].item() - ref[name].item()) <= 1e-5


def test_fewer_than_two_peers_is_refused() -> None:
    q, k, queues = _inputs(2)
    with pytest.raises(ValueError, match=">= 2"):
        mcl_moco_losses(q[:1], k[:1], queues[:1])
