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
