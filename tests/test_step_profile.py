"""The profile's attribution (regions, backward to its forward's region) and the parts bound, on the CPU."""

import torch

from mokd_fast.bench.parts import time_parts
from mokd_fast.bench.profile import _busy_us, attribute, markdown, profile_step
from mokd_fast.bench.timing import synthetic_batches
from mokd_fast.core.distributed import DistContext
from mokd_fast.core.regions import region
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods.mokd.method import MOKD
from mokd_fast.methods.mokd.parts import part_functions
from mokd_fast.methods.mokd.train_config import TrainConfig
from tests.conftest import small_config

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_backward_time_goes_to_the_forward_region() -> None:
    a = torch.randn(256, 256, requires_grad=True)
    b = torch.randn(256, 256, requires_grad=True)
    with torch.profiler.profile() as prof:
        with region("outer"):
            with region("first"):
                x = a @ b
            y = x.relu()
        with region("second"):
            loss = (y @ b).sum()
        loss.backward()
    totals = attribute(prof.events(), on_device=False)
    for path in ("outer/first", "outer", "second", "outer/first [bwd]", "second [bwd]"):
        assert totals.get(path, 0) > 0, (path, totals)
    assert "unattributed [bwd]" not in totals, totals


def test_busy_time_is_the_union_of_intervals() -> None:
    assert _busy_us([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25
    assert _busy_us([]) == 0


def test_profile_of_the_step_names_every_region() -> None:
    cfg = small_config(out_dim=128)
    train = TrainConfig(batch_size_per_gpu=2, device="cpu")
    step = TrainStep(cfg, train, CPU, iters_per_epoch=4)
    record = profile_step(step, synthetic_batches(step.model.policy, 2, CPU.device), steps=1, warmup=1)
    regions = {r["region"]: r["ms_per_step"] for r in record["regions"]}
    for name in ("cnn_student/backbone", "cnn_student/dino_head", "cnn_student/thead", "vit_student/backbone",
                 "cnn_teacher/backbone", "cnn_teacher/search", "vit_teacher/search", "losses", "optimizer", "ema",
                 "cnn_student/backbone [bwd]", "vit_student/backbone [bwd]"):
        assert regions.get(name, 0) > 0, name
    assert record["launches_per_step"] is None and record["gpu_idle_fraction"] is None  # no GPU here
    assert 0.5 < record["regions_sum_over_step"] <= 1.05
    assert "| cnn_student/backbone |" in markdown(record) and len(record["top_ops"]) == 25


def test_parts_run_the_pieces_they_name_and_sum_to_the_bound() -> None:
    cfg = small_config(out_dim=128)
    train = TrainConfig(batch_size_per_gpu=2, device="cpu")
    batch = next(synthetic_batches(MOKD.make_policy(cfg, train), 2, CPU.device))
    model = MOKD(cfg)
    parts = part_functions(cfg, train, CPU.device, batch, model)

    def with_grad(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    s = model.students
    parts["cnn_student_backbone"]()
    assert with_grad(s.cnn.backbone) and not with_grad(s.cnn.head) and not with_grad(s.vit)
    parts["vit_student_backbone"]()
    assert with_grad(s.vit.backbone) and not with_grad(s.cnn) and not with_grad(s.vit.head)
    parts["student_heads"]()
    for branch in (s.cnn, s.vit):
        assert with_grad(branch.head) and with_grad(branch.transhead) and not with_grad(branch.backbone)
    for name in ("cnn_teacher_backbone", "vit_teacher_backbone", "teacher_heads_search"):
        parts[name]()
    assert all(p.grad is None for p in model.teachers.parameters())
    figures = time_parts(cfg, train, CPU.device, batch, steps=2, warmup=1)
    assert set(figures["parts"]) == set(parts)
    total = sum(p["ms_median"] for p in figures["parts"].values())
    assert abs(figures["bound_ms"] - total) < 1e-2
    assert abs(figures["bound_samples_per_s"] - 1000 * 2 / figures["bound_ms"]) < 0.05


def test_profile_of_a_seed_step_shows_the_teacher_beside_the_student() -> None:
    from mokd_fast.methods.seed.config import SEEDConfig, SEEDTrainConfig

    cfg = SEEDConfig(teacher_arch="resnet18", teacher_format="moco", global_size=32, queue_size=16)
    step = TrainStep(cfg, SEEDTrainConfig(batch_size_per_gpu=2, device="cpu"), CPU, iters_per_epoch=4)
    record = profile_step(step, synthetic_batches(step.model.policy, 2, CPU.device), steps=1, warmup=1)
    regions = {r["region"]: r["ms_per_step"] for r in record["regions"]}
    for name in ("student", "student [bwd]", "teacher", "losses", "optimizer"):
        assert regions.get(name, 0) > 0, name
