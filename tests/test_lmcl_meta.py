"""L-MCL's meta step against a transcription of the official MetaSGD on a small stateful model (fp64)."""

import copy

import pytest
import torch
import torch.nn as nn

from mokd_fast.methods.lmcl.meta import MetaStep
from tests.official_lmcl import OfficialMetaSGD


class Toy(nn.Module):
    """Parameters, BatchNorm statistics and a memory buffer the inner objective rewrites, like the real ones."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
        self.register_buffer("memory", torch.randn(4, 3))


def _objectives(model: Toy, weight_net: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def inner() -> torch.Tensor:
        out = model.body(x)  # [B, 3]
        w = torch.sigmoid(weight_net(x)).squeeze(-1)  # [B], the per-sample weights, with gradient
        loss = (w * ((out[:, None, :] - model.memory[None]) ** 2).sum(-1).mean(-1)).mean()
        with torch.no_grad():
            model.memory.mul_(0.5).add_(0.5 * out[:4].detach())
        return loss

    def outer() -> torch.Tensor:
        return nn.functional.cross_entropy(model.body(x), y)

    return inner, outer


@pytest.fixture
def fp64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("times", [1, 2, 3])
def test_the_meta_gradient_and_rollback_equal_the_official_meta_sgd(fp64, times) -> None:
    torch.manual_seed(0)
    model, weight_net = Toy(), nn.Linear(5, 1)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ref_model, ref_weight = copy.deepcopy(model), copy.deepcopy(weight_net)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    MetaStep(list(model.parameters()), [model], list(weight_net.parameters()), times=times).run(
        *_objectives(model, weight_net, x, y), lr=0.1)

    inner, outer = _objectives(ref_model, ref_weight, x, y)
    meta = OfficialMetaSGD(list(ref_model.parameters()), [ref_model], lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(times):
        meta.zero_grad()
        meta.step(inner)
    meta.zero_grad()
    meta.step(outer)
    meta.zero_grad()
    ref_weight.zero_grad()
    outer().backward()
    meta.meta_backward()

    for ours, theirs in zip(weight_net.parameters(), ref_weight.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12)
    assert any(p.grad.abs().sum() > 0 for p in weight_net.parameters())
    # The state afterwards is the official one: parameters as before the meta step; BatchNorm statistics
    # and memory as before it plus the one forward of the last replay (the first inner step's), which
    # the official rollback leaves in place.
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, ref_model.state_dict()[name], rtol=1e-12, atol=1e-12, msg=name)
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model.memory, before["memory"])
