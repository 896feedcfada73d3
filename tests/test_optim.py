"""Official optimisation semantics: schedules, parameter groups, per-parameter clipping, LARS, frozen prototypes."""

import copy
import math

import numpy as np
import pytest
import torch
from torch.amp import GradScaler

from mokd_fast import MOKD
from mokd_fast.engine.gradients import clip_per_parameter, drop_last_layer_grads
from mokd_fast.engine.schedules import StepSchedules
from mokd_fast.methods.common.optim import LARS
from mokd_fast.methods.mokd.optim import (
    CNN_GROUP_SCHEDULES,
    VIT_GROUP_SCHEDULES,
    Schedules,
    build_optimizers,
)
from mokd_fast.methods.mokd.train_config import TrainConfig
from tests.conftest import random_crops, small_config


def test_schedules_at_chosen_steps_equal_the_formulas():
    cfg = TrainConfig(batch_size_per_gpu=16, lr_cnn=0.1, lr_vit=0.0003, warmup_epochs=2)
    epochs, iters, world = 10, 50, 4
    s = Schedules.build(cfg, epochs, iters, world, momentum_teacher=0.996)
    peak_cnn, peak_vit = 0.1 * 64 / 256, 0.0003 * 64 / 256  # scaled by the global batch / 256
    warm = 2 * iters
    for step in (0, 1, 37, warm - 1):  # linear from 0, reaching the peak at the last warm-up step
        assert s.lr_cnn[step] == pytest.approx(peak_cnn * step / (warm - 1), rel=1e-12)
        assert s.lr_vit[step] == pytest.approx(peak_vit * step / (warm - 1), rel=1e-12)
    n = (epochs - 2) * iters
    for j in (0, 1, n // 2, n - 1):  # then a half cosine towards the final value
        cosine = 0.5 * (1 + math.cos(math.pi * j / n))
        assert s.lr_cnn[warm + j] == pytest.approx(0.0048 + (peak_cnn - 0.0048) * cosine, rel=1e-12)
        assert s.lr_vit[warm + j] == pytest.approx(1e-5 + (peak_vit - 1e-5) * cosine, rel=1e-12)
    total = epochs * iters
    for step in (0, 123, total - 1):
        cosine = 0.5 * (1 + math.cos(math.pi * step / total))
        assert s.wd_vit[step] == pytest.approx(0.4 + (0.04 - 0.4) * cosine, rel=1e-12)
        assert s.wd_cnn[step] == pytest.approx(1e-4, rel=1e-12)
        assert s.momentum[step] == pytest.approx(1 + (0.996 - 1) * cosine, rel=1e-12)
    assert all(len(a) == total for a in (s.lr_cnn, s.wd_cnn, s.lr_vit, s.wd_vit, s.momentum))


def test_flags_the_official_code_ignores_are_honoured():
    cfg = TrainConfig(min_lr=1e-3, weight_decay_cnn=5e-4, weight_decay_end_cnn=1e-3, warmup_epochs=0)
    s = Schedules.build(cfg, 4, 100, 1, 0.996)
    assert s.lr_cnn[-1] == pytest.approx(1e-3, rel=1e-2) and s.lr_vit[-1] == pytest.approx(1e-3, rel=1e-2)
    assert s.wd_cnn[0] == pytest.approx(5e-4) and s.wd_cnn[-1] == pytest.approx(1e-3, rel=1e-4)


def test_parameter_groups_and_their_schedules_follow_the_official_code():
    model = MOKD(small_config())
    opt_cnn, opt_vit = build_optimizers(model.students, "sgd")

    def ids(group: dict) -> set[int]:
        return {id(p) for p in group["params"]}

    cnn = dict(model.students.cnn.named_parameters())
    expect_cnn = [
        {id(p) for n, p in cnn.items() if p.requires_grad and "transhead" not in n and not (n.endswith(".bias") or p.ndim == 1)},
        {id(p) for n, p in cnn.items() if p.requires_grad and "transhead" not in n and (n.endswith(".bias") or p.ndim == 1)},
        {id(p) for n, p in cnn.items() if "transhead" in n},  # biases and norms included
    ]
    assert [ids(g) for g in opt_cnn.param_groups] == expect_cnn
    assert id(model.students.cnn.head.last_layer.weight_g) not in set().union(*expect_cnn)  # frozen gain: no group
    vit = dict(model.students.vit.named_parameters())
    assert ids(opt_vit.param_groups[1]) == {id(p) for n, p in vit.items() if n.endswith(".bias") or p.ndim == 1}
    assert isinstance(opt_vit, torch.optim.AdamW)

    s = Schedules.build(TrainConfig(warmup_epochs=1), 3, 5, 1, 0.996)
    StepSchedules(s.arrays()).apply(7, [(opt_cnn.param_groups, CNN_GROUP_SCHEDULES),
                                        (opt_vit.param_groups, VIT_GROUP_SCHEDULES)])
    got = [(g["lr"], g["weight_decay"]) for g in opt_cnn.param_groups + opt_vit.param_groups]
    assert got == [(s.lr_cnn[7], s.wd_cnn[7]), (s.lr_cnn[7], 0.0), (s.lr_vit[7], s.wd_vit[7]),
                   (s.lr_vit[7], s.wd_vit[7]), (s.lr_vit[7], 0.0)]


def _grads(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(*shape)) for shape in [(64, 32), (32,), (8, 3, 3, 3), (5,)]]
    for p, scale in zip(params, (10.0, 0.01, 3.0, 1e-3)):
        p.grad = torch.randn(p.shape, generator=gen) * scale
    return params


def test_fused_clip_matches_the_official_per_parameter_loop():
    fused, plain = _grads(0), _grads(0)
    clip_per_parameter(fused, 3.0, fused=True)
    clip_per_parameter(plain, 3.0, fused=False)
    before = _grads(0)
    for f, p, b in zip(fused, plain, before):
        torch.testing.assert_close(f.grad, p.grad, rtol=1e-6, atol=0)
        if b.grad.norm() < 3.0:
            assert torch.equal(f.grad, b.grad)  # untouched, bit for bit
        else:
            assert f.grad.norm().item() == pytest.approx(3.0, rel=1e-5)


def _official_lars_step(params, state, lr, wd, momentum=0.9, eta=0.001):
    """Transcription of the official utils/optimizers.py LARS step (per parameter)."""
    for p in params:
        dp = p.grad
        if p.ndim != 1:
            dp = dp.add(p, alpha=wd)
            param_norm, update_norm = torch.norm(p), torch.norm(dp)
            one = torch.ones_like(param_norm)
            q = torch.where(param_norm > 0.0, torch.where(update_norm > 0, eta * param_norm / update_norm, one), one)
            dp = dp.mul(q)
        mu = state.setdefault(id(p), torch.zeros_like(p))
        mu.mul_(momentum).add_(dp)
        p.data.add_(mu, alpha=-lr)


def test_lars_matches_the_official_optimizer():
    ours, ref = _grads(1), _grads(1)
    for p, q in zip(ours, ref):
        p.data.normal_(generator=torch.Generator().manual_seed(p.numel()))
        q.data.copy_(p.data)
    opt, state = LARS(ours, lr=0.2, weight_decay=1e-4), {}
    for _ in range(3):
        opt.step()
        _official_lars_step(ref, state, lr=0.2, wd=1e-4)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_frozen_prototypes_get_no_update_and_no_optimizer_state():
    model = MOKD(small_config())
    opt_cnn, opt_vit = build_optimizers(model.students, "adamw")
    for g in opt_cnn.param_groups + opt_vit.param_groups:
        g.update(lr=0.1, weight_decay=0.1)
    model.backward(model.loss_terms(random_crops(model.cfg, 2), 0))
    named = {**{f"cnn.{n}": p for n, p in model.students.cnn.named_parameters()},
             **{f"vit.{n}": p for n, p in model.students.vit.named_parameters()}}
    before = {n: p.detach().clone() for n, p in named.items()}
    drop_last_layer_grads(named)
    opt_cnn.step()
    opt_vit.step()
    frozen = [n for n in named if "last_layer" in n]
    assert len(frozen) == 8  # V and g of both DINO heads and both T-heads
    for n, p in named.items():
        if "last_layer" in n:
            assert torch.equal(p, before[n]) and p not in {q for o in (opt_cnn, opt_vit) for q in o.state}, n
    assert not torch.equal(named["vit.backbone.cls_token"], before["vit.backbone.cls_token"])


def test_two_scalers_in_one_backward_equal_two_scaled_backward_passes():
    """fp16 scales each model's loss by its own scaler; one pass over the sum gives the same gradients."""
    torch.manual_seed(0)
    one = MOKD(small_config(drop_path_rate=0.0))
    two, fresh = copy.deepcopy(one), copy.deepcopy(one)
    two.cfg = small_config(drop_path_rate=0.0, single_backward=False)
    crops = random_crops(one.cfg, 2)
    scalers = (GradScaler("cpu", init_scale=2.0**10), GradScaler("cpu", init_scale=2.0**4))
    one.backward(one.loss_terms(crops, 0), scalers)
    two.backward(two.loss_terms(crops, 0), scalers)
    for (name, p), q in zip(one.students.named_parameters(), two.students.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    cnn_grad = one.students.cnn.backbone.conv1.weight.grad
    vit_grad = one.students.vit.backbone.patch_embed.proj.weight.grad
    fresh.backward(fresh.loss_terms(crops, 0))
    # Each model's gradient carries its own scale: 2^10 for the CNN, 2^4 for the ViT.
    ratio_cnn = (cnn_grad.norm() / fresh.students.cnn.backbone.conv1.weight.grad.norm()).item()
    ratio_vit = (vit_grad.norm() / fresh.students.vit.backbone.patch_embed.proj.weight.grad.norm()).item()
    assert np.isclose(ratio_cnn, 2.0**10, rtol=1e-3) and np.isclose(ratio_vit, 2.0**4, rtol=1e-3)


def test_the_sgd_recipe_is_official_sgd_by_default_and_adam_with_a_warm_up_when_asked():
    """MCL-MoCo's and L-MCL's optimiser: SGD (momentum, decay, Nesterov for L-MCL) unless --optimizer adam; a
    --warmup_epochs warm-up rises per step from 0 and leaves the per-epoch schedule after it untouched."""
    from mokd_fast.methods.common.sgd import sgd_over, step_or_cosine_lr
    from mokd_fast.methods.lmcl.config import LMCLTrainConfig
    from mokd_fast.methods.mcl.config import MCLTrainConfig

    net = torch.nn.Linear(3, 2)
    official = MCLTrainConfig(batch_size_per_gpu=64, schedule=(2,))
    opt = sgd_over("peers", net, official, fused=True)["peers"].optimizer
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and not opt.param_groups[0]["nesterov"]
    nesterov = sgd_over("learners", net, LMCLTrainConfig(), fused=True, nesterov=True)["learners"].optimizer
    assert nesterov.param_groups[0]["nesterov"]
    lr = step_or_cosine_lr(official, 3, 4, 1)["lr"]
    np.testing.assert_allclose(lr, [0.0075] * 8 + [0.00075] * 4)  # 0.03 x 64 / 256, x0.1 from epoch 2

    adam = MCLTrainConfig(batch_size_per_gpu=64, optimizer="adam", lr=1e-3, scale_lr=False, cos=True, warmup_epochs=1)
    opt = sgd_over("peers", net, adam, fused=True)["peers"].optimizer
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 1e-4
    lr = step_or_cosine_lr(adam, 3, 4, 1)["lr"]
    np.testing.assert_allclose(lr[:4], np.linspace(0, 1e-3, 4))
    np.testing.assert_allclose(lr[4:], np.repeat(1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(1, 3) / 3)), 4))
    with pytest.raises(ValueError, match="--optimizer"):
        MCLTrainConfig(optimizer="lars")
