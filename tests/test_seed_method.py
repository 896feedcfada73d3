"""SEED through the engine: the official step, train.py end to end, exact resume with the queue, DDP, the eval tools."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

from mokd_fast.cli import main as train_main
from mokd_fast.core.distributed import DistContext
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods.common.schedules import epoch_cosine_schedule
from mokd_fast.methods.seed.config import SEEDConfig, SEEDTrainConfig
from mokd_fast.methods.seed.losses import similarity_logits
from mokd_fast.methods.seed.method import SEED
from mokd_fast.methods.seed.student import Student
from pipelines.batch import MultiCropBatch
from tests.helpers import assert_rel_close, run_gloo
from tests.official_seed import OfficialSEED, official_lr

CPU = torch.device("cpu")
B, SIZE, LOCAL, QUEUE = 4, 32, 16, 16


def _step(ctx: DistContext | None = None, batch: int = B, student: str = "resnet18", **method) -> TrainStep:
    torch.manual_seed(0)
    cfg = SEEDConfig(teacher="", teacher_arch="resnet18", teacher_format="moco", student_arch=student,
                     global_size=SIZE, local_size=LOCAL, queue_size=QUEUE, epochs=10, **method)
    train = SEEDTrainConfig(batch_size_per_gpu=batch, device="cpu", compile=False, channels_last=False)
    return TrainStep(cfg, train, ctx or DistContext(0, 1, 0, CPU), iters_per_epoch=1)


def _near(x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    return x + scale * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def dtype(request):
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("n_local", [0, 2])
def test_engine_step_equals_the_official_seed_step(n_local, dtype) -> None:
    """Three steps (epochs 0-2 of the warm-up) against the official builder, loss and SGD, queues with near-duplicates.

    In fp32 the first step's loss (same weights) agrees to 1e-5; later steps are not compared: at
    temperature 1e-4 a rounding difference of 1e-7 in a near-duplicate's cosine (sum vs einsum)
    moves its target weight by 1e-3, so the two fp32 runs' gradients drift apart by conditioning
    alone (up to 1e-3 in the third step's loss). In fp64 that amplification leaves every loss and
    weight equal to 1e-9, which is the test of the update.
    """
    step = _step(local_crops_number=n_local)
    model = step.model
    student = copy.deepcopy(model.student)
    opt = torch.optim.SGD(student.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-4, foreach=False)
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(B, 3, SIZE, SIZE, generator=gen)
    patches = torch.randn(n_local * B, 3, LOCAL, LOCAL, generator=gen)  # view-major
    with torch.no_grad():  # near-duplicates of this batch's teacher embeddings in both queues
        model.queue.queue[B:2 * B] = F.normalize(_near(model.teacher(image), 2e-3, 2), dim=1)
        if n_local:
            model.small_queue.queue[B:2 * B] = F.normalize(_near(model.teacher(patches[:B]), 2e-3, 3), dim=1)
    official = OfficialSEED(student.embed, model.teacher, model.queue.queue.T,
                            model.small_queue.queue.T if n_local else None)
    for k in range(3):
        x, p = _near(image, 1e-3, 10 + k), _near(patches, 1e-3, 20 + k)  # near-duplicates of earlier steps' views
        if k == 2:
            with torch.no_grad():
                t = F.normalize(model.teacher(x), dim=1)
                target = similarity_logits(t, t, model.queue.queue, 1e-4).softmax(dim=1)
            assert target[:, 0].min() < 0.9, "the queue must hold near-duplicates the 1e-4 temperature resolves"
        got = step(MultiCropBatch(x, p if n_local else None, n_global=1), k, epoch=k)
        for group in opt.param_groups:
            group["lr"] = official_lr(k, 0.03, B / 256, 10)
        opt.zero_grad()
        small = p.view(n_local, B, 3, LOCAL, LOCAL).transpose(0, 1) if n_local else None  # sample-major, as official
        loss = official.loss(x, small)
        loss.backward()
        opt.step()
        if dtype == torch.float64 or k == 0:
            tol = 1e-9 if dtype == torch.float64 else 1e-5
            assert abs(got["loss_student"].item() - loss.item()) <= tol, (k, got["loss_student"].item(), loss.item())
    for (name, ours), theirs in zip(model.student.named_parameters(), student.parameters()):
        if dtype == torch.float64:
            assert_rel_close(ours, theirs, 1e-9, name)
    assert model.queue.queue.dtype == dtype
    torch.testing.assert_close(model.queue.queue, official.queue.T, rtol=0, atol=1e-6)
    assert int(model.queue.ptr) == official.ptr == 3 * B % QUEUE
    if n_local:
        torch.testing.assert_close(model.small_queue.queue, official.small_queue.T, rtol=0, atol=1e-6)


def test_the_schedule_is_the_official_per_epoch_warm_up_and_cosine() -> None:
    lr, epochs, ipe = 0.03, 200, 3
    got = epoch_cosine_schedule(lr, lr * 1024 / 256, epochs, ipe, warmup_epochs=5)
    want = [official_lr(e, lr, 1024 / 256, epochs) for e in range(epochs) for _ in range(ipe)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_terms_and_teacher_embeddings_are_fp32_under_autocast(precision) -> None:
    torch.manual_seed(0)
    cfg = SEEDConfig(teacher="", teacher_arch="resnet18", teacher_format="moco", global_size=SIZE, queue_size=QUEUE)
    step = TrainStep(cfg, SEEDTrainConfig(batch_size_per_gpu=B, device="cpu", compile=False, precision=precision),
                     DistContext(0, 1, 0, CPU), iters_per_epoch=1)
    out = step(MultiCropBatch(torch.randn(B, 3, SIZE, SIZE), None, n_global=1), 0, 0)
    assert all(v.dtype == torch.float32 and math.isfinite(v.item()) for v in out.values())
    assert step.model.queue.queue.dtype == torch.float32
    assert (step.scalers is not None) == (precision == "fp16")


def _ddp_worker(rank: int, world: int, batches: list) -> dict:
    step = _step(DistContext(rank, world, rank, CPU), batch=B // world, student="vit_tiny", local_crops_number=2)
    per = B // world
    losses = []
    for k, (x, p) in enumerate(batches):
        mine = p.view(2, B, 3, LOCAL, LOCAL)[:, rank * per:(rank + 1) * per].reshape(-1, 3, LOCAL, LOCAL)
        out = step(MultiCropBatch(x[rank * per:(rank + 1) * per], mine, n_global=1), k, epoch=k)
        losses.append(out["loss_student"].item())
    return {"student": {k: v.clone() for k, v in step.model.student.state_dict().items()},
            "queue": step.model.queue.queue.clone(), "small": step.model.small_queue.queue.clone(), "losses": losses}


def test_two_process_ddp_equals_one_process_on_the_concatenated_batch() -> None:
    """A ViT student (no BatchNorm) and an eval-mode teacher: the step is a function of the global batch only."""
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randn(B, 3, SIZE, SIZE, generator=gen), torch.randn(2 * B, 3, LOCAL, LOCAL, generator=gen))
               for _ in range(3)]
    ranks = run_gloo(_ddp_worker, 2, batches)
    single = _ddp_worker(0, 1, batches)
    for rank in (0, 1):
        for name, value in single["student"].items():
            torch.testing.assert_close(ranks[rank]["student"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ranks[rank]["queue"], single["queue"], rtol=0, atol=1e-6)
        torch.testing.assert_close(ranks[rank]["small"], single["small"], rtol=0, atol=1e-6)
    assert single["losses"] == pytest.approx([(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])],
                                             rel=1e-5)


def save_moco_teacher(path: Path, seed: int = 0) -> Path:
    """A small official-layout MoCo v2 checkpoint (ResNet-18 query encoder with its MLP)."""
    torch.manual_seed(seed)
    net = tvm.resnet18(num_classes=128)
    net.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), net.fc)
    torch.save({"arch": "resnet18", "state_dict": {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}},
               path)
    return path


def _flags(data: Path, out: Path, teacher: Path, *extra: str) -> list[str]:
    return ["--method", "seed", "--teacher", str(teacher), "--student_arch", "resnet18", "--global_size", str(SIZE),
            "--local_crops_number", "2", "--local_size", str(LOCAL), "--queue_size", "24", "--epochs", "2",
            "--batch_size_per_gpu", "4", "--num_workers", "1", "--log_every", "1", "--ckpt_every_steps", "0",
            "--device", "cpu", "--data_path", str(data), "--output_dir", str(out), "--tensorboard", "False", *extra]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def seed_run(photo_folder, tmp_path_factory):
    """An uninterrupted 2-epoch SEED run (8 steps) with small patches, distilling a MoCo-format teacher."""
    root = tmp_path_factory.mktemp("seed")
    teacher = save_moco_teacher(root / "moco.pth.tar")
    assert train_main(_flags(photo_folder, root / "run", teacher)) == 0
    return root / "run", teacher


def test_train_py_runs_seed_end_to_end(seed_run) -> None:
    run, _ = seed_run
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert {"seed", "seed_small", "loss_student", "lr"} <= set(lines[0])
    assert all(math.isfinite(v) for line in lines for v in line.values())
    assert lines[0]["lr"] == pytest.approx(0.03) and lines[-1]["lr"] == pytest.approx(0.03 + (0.03 * 4 / 256 - 0.03) / 5)
    ckpt = _load(run / "checkpoint.pth")
    assert {"student", "arch_student", "seed_queues", "seed_teacher", "optimizer_student", "epoch"} <= set(ckpt)
    assert ckpt["mokd_fast"]["config"]["method"] == "seed" and ckpt["epoch"] == 2
    assert int(ckpt["seed_queues"]["queue"]["ptr"]) == 8 * 4 % 24 == int(ckpt["seed_queues"]["small_queue"]["ptr"])
    assert "MoCo resnet18" in ckpt["seed_teacher"]["source"]


def test_seed_resume_from_a_mid_epoch_stop_is_bitwise_exact(seed_run, photo_folder, tmp_path) -> None:
    ref_run, teacher = seed_run
    out = tmp_path / "run"
    assert train_main(_flags(photo_folder, out, teacher, "--max_steps", "3")) == 0
    assert train_main(_flags(photo_folder, out, teacher, "--resume", str(out / "checkpoint.pth"))) == 0
    ref, got = _load(ref_run / "checkpoint.pth"), _load(out / "checkpoint.pth")
    for name, value in ref["student"].items():
        assert torch.equal(value, got["student"][name]), name
    for queue in ("queue", "small_queue"):
        for name, value in ref["seed_queues"][queue].items():
            assert torch.equal(value, got["seed_queues"][queue][name]), (queue, name)
    for pid, state in ref["optimizer_student"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(got["optimizer_student"]["state"][pid][name]))
    logs = [[json.loads(line)["loss_student"] for line in (r / "log.jsonl").read_text().splitlines()]
            for r in (ref_run, out)]
    assert logs[0] == logs[1]


def test_resuming_with_another_teacher_is_refused(seed_run, photo_folder, tmp_path, capsys) -> None:
    ref_run, _ = seed_run
    other = save_moco_teacher(tmp_path / "other.pth.tar", seed=1)
    status = train_main(_flags(photo_folder, tmp_path / "r", other, "--resume", str(ref_run / "checkpoint.pth")))
    assert status == 2 and "resume with the same teacher" in capsys.readouterr().err


def test_eval_and_export_tools_read_the_student(seed_run, tmp_path) -> None:
    from mokd_fast.eval.cli import export_main
    from mokd_fast.eval.features import FeatureNet
    from mokd_fast.methods.seed.student import Student
    from mokd_fast.models.weights import load_backbone

    run, _ = seed_run
    ckpt = _load(run / "checkpoint.pth")
    student = Student("resnet18", 128)
    student.load_state_dict(ckpt["student"])
    loaded = load_backbone(run / "checkpoint.pth", "student", None)
    assert (loaded.arch, loaded.kind, loaded.epoch) == ("resnet18", "cnn", 2)
    images = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(FeatureNet(loaded)(images), student.eval().backbone(images))
    assert export_main([str(run / "checkpoint.pth"), str(tmp_path / "student.pth"), "--key", "student",
                        "--format", "torchvision"]) == 0
    net = tvm.resnet18()
    net.fc = nn.Identity()
    net.load_state_dict(torch.load(tmp_path / "student.pth", weights_only=True))


def test_head_bn_puts_batchnorm_in_the_student_head_only_when_asked() -> None:
    """Official: Linear-ReLU-Linear; ``--head_bn``: Linear-BN-ReLU-Linear, with the backbone's keys unchanged."""
    plain, with_bn = Student("resnet18", 128), Student("resnet18", 128, head_bn=True)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.head.modules())
    assert isinstance(with_bn.head[1], nn.BatchNorm1d) and with_bn.head[-1].out_features == 128
    assert [k for k in with_bn.state_dict() if k.startswith("backbone.")] == \
        [k for k in plain.state_dict() if k.startswith("backbone.")]
    (out,) = with_bn([torch.randn(4, 3, 64, 64)])
    assert out.shape == (4, 128)
    assert SEEDConfig().head_bn is False
    assert "--head_bn true" in SEED(SEEDConfig(teacher_arch="resnet18", global_size=64)).collapse_advice()["spread"]
