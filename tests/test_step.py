"""The step's speed switches: each on vs off gives the same losses and gradients (CPU).

Losses are compared in fp32 (relative error <= 1e-5). Gradients and updated weights are compared
in fp64: in fp32 this tiny BatchNorm network at temperature 0.04 turns kernel-order rounding into
gradient differences of a few percent in some layers (measured for channels-last: 3.7% in fp32,
1e-13 in fp64), which says nothing about the switch. fp64 does: a layout or kernel change agrees
to rounding, a semantic change would not.
"""

import dataclasses

import pytest
import torch
import torch._dynamo

from mokd_fast import LOSS_TERMS
from mokd_fast.core.distributed import DistContext
from mokd_fast.core.switches import StepSwitches
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods.mokd.train_config import TrainConfig
from pipelines.batch import MultiCropBatch
from tests.conftest import random_crops, small_config
from tests.helpers import assert_rel_close

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
PLAIN = {"compile": False, "channels_last": False, "fused_optim": False}


SMALL = {"global_size": 32, "local_size": 16, "input_size": 32}  # resnet18 + vit_tiny on 2x32 + 2x16 crops


def _step(overrides: dict, method_overrides: dict | None = None) -> TrainStep:
    torch.manual_seed(0)
    method = small_config(drop_path_rate=0.0, **SMALL, **(method_overrides or {}))
    cfg = TrainConfig(optimizer="adamw", device="cpu", **{**PLAIN, **overrides})
    return TrainStep(method, cfg, CPU, iters_per_epoch=4)


def _batch(seed: int) -> MultiCropBatch:
    return MultiCropBatch.from_views(random_crops(small_config(**SMALL), batch=3, seed=seed))


def _assert_fp32_losses_match(a: TrainStep, b: TrainStep) -> None:
    terms_a, terms_b = a(_batch(0), 0, epoch=1), b(_batch(0), 0, epoch=1)
    for name in LOSS_TERMS:
        assert_rel_close(terms_a[name], terms_b[name], 1e-5, f"fp32 {name}")


def _assert_fp64_steps_match(a: TrainStep, b: TrainStep, steps: int, rel: float = 1e-8) -> None:
    """Losses, gradients and updated weights of ``steps`` steps (built under fp64 default dtype).

    A semantic difference (a missing detach, a wrong temperature) shows as an O(1) error; rounding
    under fp64, even amplified by temperature 0.04, stays orders of magnitude below ``rel``.
    """
    for step in range(steps):
        terms_a, terms_b = a(_batch(step), step, epoch=1), b(_batch(step), step, epoch=1)
        for name in LOSS_TERMS:
            assert_rel_close(terms_a[name], terms_b[name], rel, f"fp64 step {step} {name}")
        grads_b = dict(b.model.students.named_parameters())
        for name, p in a.model.students.named_parameters():
            if p.grad is not None:
                assert_rel_close(p.grad, grads_b[name].grad, rel, f"fp64 step {step} grad {name}")
    # AdamW's g / (sqrt(v) + eps) magnifies rounding on entries whose gradient is near eps: 1e-6 here.
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        if p.is_floating_point():
            assert_rel_close(p, q, 1e-6, f"fp64 after {steps} steps: {name}")


@pytest.fixture
def fp64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("switch", ["channels_last", "fused_optim"])
def test_switch_on_equals_off_fp32_losses(switch):
    on = _step({switch: True})
    assert getattr(on.switches, switch)
    if switch == "channels_last":
        weights = [p for p in on.model.students.cnn.parameters() if p.ndim == 4]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    _assert_fp32_losses_match(on, _step({}))


@pytest.mark.parametrize("switch", ["channels_last", "fused_optim"])
def test_switch_on_equals_off_fp64_steps(switch, fp64):
    _assert_fp64_steps_match(_step({switch: True}), _step({}), steps=2)


def test_compile_equals_eager_and_never_recompiles(fp64):
    """One compilation (about 40 s on 2 cores), then steps with new data and a new epoch reuse it."""
    torch._dynamo.reset()
    try:
        compiled = _step({"compile": True})
        # Inductor re-derives norms and their backward (other formulas, fused): rounding near 1e-8 in fp64.
        _assert_fp64_steps_match(compiled, _step({}), steps=1, rel=1e-6)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert graphs == 6  # student CNN and ViT x (global, local) + two teachers
        for step in (1, 2):
            compiled(_batch(step), step, epoch=2)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    finally:
        torch._dynamo.reset()


def test_auto_switches_follow_the_device():
    cfg = TrainConfig()
    cpu, cuda = StepSwitches.resolve(cfg, torch.device("cpu")), StepSwitches.resolve(cfg, torch.device("cuda"))
    assert (cpu.precision, cpu.compile, cpu.channels_last) == ("fp32", False, False)
    assert (cuda.precision, cuda.compile, cuda.channels_last) == ("bf16", True, True)
    forced = StepSwitches.resolve(dataclasses.replace(cfg, compile=True, precision="fp16"), torch.device("cpu"))
    assert forced.compile and forced.precision == "fp16"


def test_two_backward_passes_are_refused_under_ddp():
    step = _step({}, {"single_backward": False})
    with pytest.raises(ValueError, match="single_backward"):
        step.model.distribute(torch.device("cpu"))
