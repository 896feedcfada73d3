"""DoGo's loss kernels and step objective against a transcription of the official modules, on the same
tensors (fp32, CPU), and their global-batch form under two gloo processes against one process on the
whole batch."""

import pytest
import torch
import torch.nn.functional as F

from mokd_fast.methods.dogo.losses import nt_xent, similarity_kl, simsiam_loss
from mokd_fast.methods.dogo.objective import dogo_objective
from tests.helpers import assert_rel_close, run_gloo
from tests.official_dogo import KLLoss, NTXent, SimSiamLoss, official_step_totals

B, D = 12, 32


def _embeddings(seed: int, n: int = 4, normalise: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = [torch.randn(B, D, generator=gen, dtype=torch.float32) for _ in range(n)]
    return [F.normalize(t, dim=1) if normalise else t for t in out]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nt_xent_equals_official(seed) -> None:
    z1, z2 = _embeddings(seed, 2)
    ours, official = nt_xent(z1, z2), NTXent(B)(z1, z2)
    assert ours.dtype == torch.float32 and ours.shape == ()
    torch.testing.assert_close(ours, official, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_simsiam_loss_equals_official_and_stops_gradients_at_z(seed) -> None:
    p1, p2, z1, z2 = [t.requires_grad_() for t in _embeddings(seed, normalise=True)]
    ours = simsiam_loss(p1, p2, z1, z2)
    torch.testing.assert_close(ours, SimSiamLoss()(z1, z2, p1, p2), rtol=1e-6, atol=1e-6)
    ours.backward()
    assert p1.grad is not None and p2.grad is not None and z1.grad is None and z2.grad is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_similarity_kl_equals_official_both_directions(seed) -> None:
    x1, y1, x2, y2 = _embeddings(seed)
    official_s, official_t = KLLoss(0.1)(x1, y1, x2, y2)
    torch.testing.assert_close(similarity_kl(x1, y1, x2, y2), official_s, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(similarity_kl(x2, y2, x1, y1), official_t, rtol=1e-6, atol=1e-7)


def test_similarity_kl_is_the_sum_over_b_squared_and_leaves_the_peer_alone() -> None:
    x1, y1, x2, y2 = [t.requires_grad_() for t in _embeddings(3)]
    loss = similarity_kl(x1, y1, x2, y2, temperature=0.2)
    s = F.softmax(F.normalize(x1, dim=1) @ F.normalize(y1, dim=1).T / 0.2, dim=1)
    p = F.softmax(F.normalize(x2, dim=1) @ F.normalize(y2, dim=1).T / 0.2, dim=1)
    torch.testing.assert_close(loss, (p * (p.log() - s.log())).sum() / B**2, rtol=1e-5, atol=1e-7)
    loss.backward()
    assert x1.grad.abs().sum() > 0 and y1.grad.abs().sum() > 0 and x2.grad is None and y2.grad is None
    assert similarity_kl(x1, y1, x1, y1).abs() < 1e-6  # a peer identical to oneself: no divergence


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_are_fp32_under_autocast(dtype) -> None:
    """Half-precision inputs inside autocast: fp32 results, close to the fp32 computation on the same inputs."""
    tensors = _embeddings(4, normalise=True)
    half = [t.to(dtype) for t in tensors]
    for fn, args in ((nt_xent, 2), (simsiam_loss, 4), (similarity_kl, 4)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = fn(*half[:args])
        assert value.dtype == torch.float32, fn.__name__
        torch.testing.assert_close(value, fn(*[t.float() for t in half[:args]]), rtol=1e-6, atol=1e-6)


def _ddp_worker(rank: int, world: int) -> dict:
    full = _embeddings(7)  # the whole batch on every rank; each rank takes its rows
    mine = [t[rank * (B // world) : (rank + 1) * (B // world)].clone().requires_grad_() for t in full]
    out = {}
    for name, fn, args in (("nt_xent", nt_xent, mine[:2]), ("kl", similarity_kl, mine)):
        for t in mine:
            t.grad = None
        loss = fn(*args, global_batch=True)
        loss.backward()
        out[name] = (loss.detach(), [t.grad.clone() if t.grad is not None else None for t in args])
    return out


def test_global_batch_under_two_ranks_equals_one_process_on_the_whole_batch() -> None:
    """DDP averages the ranks' gradients; with the loss scaled by W that is the one-process gradient."""
    world = 2
    results = run_gloo(_ddp_worker, world)
    full = [t.requires_grad_() for t in _embeddings(7)]
    for name, fn, args in (("nt_xent", nt_xent, full[:2]), ("kl", similarity_kl, full)):
        for t in full:
            t.grad = None
        expected = fn(*args)
        expected.backward()
        torch.testing.assert_close(sum(results[r][name][0] for r in range(world)) / world, expected.detach(),
                                   rtol=1e-5, atol=1e-6)
        for i, t in enumerate(args):
            per_rank = [results[r][name][1][i] for r in range(world)]
            if t.grad is None or name == "kl" and i >= 2:  # the detached peer gets no gradient anywhere
                assert all(g is None for g in per_rank), (name, i)
                continue
            torch.testing.assert_close(torch.cat(per_rank) / world, t.grad, rtol=1e-5, atol=1e-7, msg=f"{name} input {i}")


@pytest.mark.parametrize("kinds", [("simclr", "simsiam"), ("simsiam", "simsiam"), ("simclr", "simclr"),
                                   ("simsiam", "simclr")])
def test_step_objective_equals_the_official_two_backward_passes(kinds) -> None:
    gen = torch.Generator().manual_seed(11)

    def outputs():
        def one(kind):
            keys = ("z", "p") if kind == "simsiam" else ("z",)
            return {k: F.normalize(torch.randn(B, D, generator=gen), dim=1).requires_grad_() for k in keys}
        return tuple((one(kind), one(kind)) for kind in kinds)

    ours_out = outputs()
    official_out = tuple(tuple({k: v.detach().clone().requires_grad_() for k, v in o.items()} for o in pair)
                         for pair in ours_out)
    leaves = lambda outs: [t for pair in outs for o in pair for t in o.values()]  # noqa: E731
    terms, totals = dogo_objective(kinds, ours_out)
    (totals["peer_1"] + totals["peer_2"]).backward()  # one pass, as the engine runs it
    official = official_step_totals(kinds, official_out, B)
    official[0].backward()
    official[1].backward()
    torch.testing.assert_close(totals["peer_1"], official[0].detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(totals["peer_2"], official[1].detach(), rtol=1e-6, atol=1e-6)
    assert set(terms) == {"ssl_1", "kl_1", "ssl_2", "kl_2"}
    for ours, ref in zip(leaves(ours_out), leaves(official_out)):
        if ref.grad is None:
            assert ours.grad is None or not ours.grad.any()
        else:
            assert_rel_close(ours.grad, ref.grad, 1e-5, "gradient")  # max|diff| / max|ref|: the x100 KL weight
