"""L-MCL through the engine: the official step, DDP, train.py end to end with labels and indices, resume, eval."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mokd_fast.cli import main as train_main
from mokd_fast.core.distributed import DistContext
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods.lmcl.config import LMCLConfig, LMCLTrainConfig
from mokd_fast.methods.lmcl.networks import AuxResNet
from mokd_fast.models.features import cnn_pooled
from pipelines.batch import MultiCropBatch
from tests.helpers import assert_rel_close, run_gloo
from tests.official_lmcl import official_step_loss

CPU = torch.device("cpu")
B, SIZE, N_DATA, NEG = 4, 32, 24, 8
LABELS = torch.arange(N_DATA) % 3


def _step(ctx: DistContext | None = None, batch: int = B, lr: float = 0.1, meta: str = "off", **method) -> TrainStep:
    torch.manual_seed(0)
    cfg = LMCLConfig(image_size=SIZE, neg_k=NEG, epochs=3, meta=meta, **method)
    train = LMCLTrainConfig(batch_size_per_gpu=batch, device="cpu", compile=False, channels_last=False, scale_lr=False,
                            schedule=(1, 2), lr=lr)
    return TrainStep(cfg, train, ctx or DistContext(0, 1, 0, CPU), iters_per_epoch=1, labels=LABELS)


def _batch(seed: int, indices: torch.Tensor) -> MultiCropBatch:
    x = torch.randn(len(indices), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return MultiCropBatch(x, None, LABELS[indices], n_global=1, indices=indices)


def test_the_network_is_a_torchvision_resnet_with_three_auxiliary_stages() -> None:
    net = AuxResNet("resnet18", 7).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    feats, logits = net(x)
    assert [f.shape for f in feats] == [(2, 512)] * 4 and [lg.shape for lg in logits] == [(2, 7)] * 4
    with torch.no_grad():
        torch.testing.assert_close(logits[-1], net.backbone(x))  # the final stage is the plain ResNet
    with pytest.raises(ValueError, match="torchvision ResNet"):
        AuxResNet("vit_tiny", 7)


def test_knn_and_gates_read_the_pooled_feature_not_the_classifier() -> None:
    """The eval backbone keeps its fc (the final classifier); k-NN and the proof's gates must read the 512-d pooled
    feature before it (until 2026-12-05 they read the 7 logits)."""
    net = AuxResNet("resnet18", 7).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled = cnn_pooled(net.backbone, x)
        feats, _ = net(x)
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, feats[-1])


@pytest.fixture
def fp64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_engine_step_equals_the_official_step_with_unit_pair_weights(fp64) -> None:
    """Three steps (lr 0.1, x0.1 at epochs 1 and 2, Nesterov) against the official loss assembly, memory update and SGD."""
    step = _step()
    model = step.model
    learners = copy.deepcopy(model.learners)
    memories = [model.banks.bank(i).clone() for i in range(2)]
    opt = torch.optim.SGD(learners.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True, foreach=False)
    for k in range(3):
        indices = torch.randperm(N_DATA, generator=torch.Generator().manual_seed(k))[:B]
        batch = _batch(k, indices)
        idx = model.sampler.sample(indices, 1, NEG, seed=0, step=k)  # the draws the step makes
        got = step(batch, k, epoch=k)
        for group in opt.param_groups:
            group["lr"] = 0.1 * 0.1 ** sum(k >= m for m in (1, 2))
        opt.zero_grad()
        loss = official_step_loss(learners, batch.global_crops, batch.labels, idx, memories, torch.ones(2 * 16, B))
        loss.backward()
        opt.step()
        assert abs(got["loss_learners"].item() - loss.item()) <= 1e-9 * abs(loss.item()), (k, got["loss_learners"], loss)
    for (name, a), b in zip(model.learners.state_dict().items(), learners.state_dict().values()):
        if a.is_floating_point():
            assert_rel_close(a, b, 1e-9, name)
    for i in range(2):
        torch.testing.assert_close(model.banks.bank(i), memories[i], rtol=0, atol=1e-12)


def _slice(batch: MultiCropBatch, rank: int, per: int) -> MultiCropBatch:
    part = slice(rank * per, (rank + 1) * per)
    return MultiCropBatch(batch.global_crops[part], None, batch.labels[part], 1, batch.indices[part])


def _ddp_worker(rank: int, world: int, batches: list) -> dict:
    # lr 1e-3: with BatchNorm on its initial running statistics (no normalisation) 0.1 diverges at once
    step = _step(DistContext(rank, world, rank, CPU), batch=B // world, lr=1e-3)
    for m in step.model.learners.modules():  # running statistics: the step is then a function of the global batch
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    losses = []
    for k, indices in enumerate(batches):
        out = step(_slice(_batch(100 + k, indices), rank, B // world), k, epoch=k)
        losses.append(out["loss_learners"].item())
    return {"learners": {k: v.clone() for k, v in step.model.learners.state_dict().items()},
            "banks": {k: v.clone() for k, v in step.model.banks.state_dict().items()}, "losses": losses}


def test_two_process_ddp_equals_one_process_on_the_concatenated_batch() -> None:
    """Same draws of positives and negatives however the batch is split; heads and aggregator reduced too."""
    gen = torch.Generator().manual_seed(9)
    batches = [torch.randperm(N_DATA, generator=gen)[:B] for _ in range(2)]
    ranks = run_gloo(_ddp_worker, 2, batches)
    single = _ddp_worker(0, 1, batches)
    for rank in (0, 1):
        for name, value in single["learners"].items():
            torch.testing.assert_close(ranks[rank]["learners"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        for name, value in single["banks"].items():
            torch.testing.assert_close(ranks[rank]["banks"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert single["losses"] == pytest.approx([(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])],
                                             rel=1e-5)


def _flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--method", "lmcl", "--image_size", str(SIZE), "--neg_k", "8", "--epochs", "2", "--batch_size_per_gpu",
            "4", "--num_workers", "1", "--log_every", "1", "--ckpt_every_steps", "0", "--device", "cpu",
            "--pipeline", "torchvision", "--data_path", str(data), "--output_dir", str(out), "--tensorboard", "False",
            *extra]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def lmcl_run(photo_folder, tmp_path_factory):
    """An uninterrupted 2-epoch L-MCL run (8 steps) of two ResNet-18s on 16 labelled photos of 4 classes."""
    out = tmp_path_factory.mktemp("lmcl")
    assert train_main(_flags(photo_folder, out)) == 0
    return out


def test_train_py_runs_lmcl_end_to_end(lmcl_run) -> None:
    lines = [json.loads(line) for line in (lmcl_run / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert {"cls", "kd", "vcl", "svcl", "icl", "sicl", "loss_learners", "lr"} <= set(lines[0])
    assert all(math.isfinite(v) for line in lines for v in line.values())
    ckpt = _load(lmcl_run / "checkpoint.pth")
    assert {"net_1", "net_2", "arch_1", "lmcl_heads", "lmcl_banks", "optimizer_learners", "epoch"} <= set(ckpt)
    assert ckpt["lmcl_banks"]["memory_0"].shape == (16, 128) and ckpt["mokd_fast"]["config"]["method"] == "lmcl"
    assert ckpt["net_1"]["backbone.fc.weight"].shape == (4, 512)  # classes read from the data


def test_lmcl_resume_from_a_mid_epoch_stop_is_bitwise_exact(lmcl_run, photo_folder, tmp_path) -> None:
    out = tmp_path / "run"
    assert train_main(_flags(photo_folder, out, "--max_steps", "3")) == 0
    assert train_main(_flags(photo_folder, out, "--resume", str(out / "checkpoint.pth"))) == 0
    ref, got = _load(lmcl_run / "checkpoint.pth"), _load(out / "checkpoint.pth")
    for entry in ("net_1", "net_2", "lmcl_banks"):
        for name, value in ref[entry].items():
            assert torch.equal(value, got[entry][name]), (entry, name)
    logs = [[json.loads(line)["loss_learners"] for line in (r / "log.jsonl").read_text().splitlines()]
            for r in (lmcl_run, out)]
    assert logs[0] == logs[1]


def test_the_dali_pipeline_is_refused_with_the_pipelines_that_work(converted_folders, tmp_path, capsys) -> None:
    status = train_main([*_flags(converted_folders["dali"] / "train", tmp_path / "d")[:-8], "--pipeline", "dali",
                         "--data_path", str(converted_folders["dali"] / "train"), "--output_dir", str(tmp_path / "d"),
                         "--tensorboard", "False"])
    assert status == 2 and "--pipeline nvjpeg" in capsys.readouterr().err


def test_eval_tools_read_each_network(lmcl_run) -> None:
    from mokd_fast.eval.features import FeatureNet
    from mokd_fast.models.weights import load_backbone

    ckpt = _load(lmcl_run / "checkpoint.pth")
    images = torch.randn(3, 3, SIZE, SIZE)
    for i in (1, 2):
        net = AuxResNet("resnet18", 4)
        net.load_state_dict(ckpt[f"net_{i}"])
        loaded = load_backbone(lmcl_run / "checkpoint.pth", f"net_{i}", None)
        with torch.no_grad():
            torch.testing.assert_close(FeatureNet(loaded)(images), net.eval()(images)[0][-1])


def test_the_meta_step_equals_the_official_meta_block(fp64) -> None:
    """One step with --meta on at batch 0 against the official main step and meta block on copies (fp64).

    Within 1e-7: second-order products through two ResNets amplify fp64 rounding (the first-order
    quantities agree to 1e-9; a meta gradient computed wrongly differs in the fifth digit or worse).
    """
    from tests.official_lmcl import official_meta_step

    step = _step(meta="on", lr=0.1)
    model = step.model
    learners, weight_net, banks = copy.deepcopy(model.learners), copy.deepcopy(model.weight_net), copy.deepcopy(model.banks)
    indices = torch.arange(B)
    batch = _batch(0, indices)
    idx = model.sampler.sample(indices, 1, NEG, seed=0, step=0)
    opt = torch.optim.SGD(learners.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True, foreach=False)
    memories = [banks.bank(i) for i in range(2)]
    saved = copy.deepcopy(learners.state_dict())
    with torch.no_grad():
        feats = [list(net(batch.global_crops)[0]) for net in learners.nets]
    learners.load_state_dict(saved)  # this extra forward must not move the BatchNorm statistics
    weights = weight_net(feats).detach()  # the main step's pair weights (official: under no_grad)
    opt.zero_grad()
    official_step_loss(learners, batch.global_crops, batch.labels, idx, memories, weights).backward()
    opt.step()
    want = official_meta_step(learners, weight_net, banks, batch.global_crops, batch.labels, idx, lr=0.1)
    weight_opt = torch.optim.SGD(weight_net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    for p, g in zip(weight_net.parameters(), want):
        p.grad = g
    weight_opt.step()

    before = {k: v.clone() for k, v in model.weight_net.state_dict().items()}
    step(batch, 0, epoch=0)
    assert any(not torch.equal(v, before[k]) for k, v in model.weight_net.state_dict().items())
    for (name, a), b in zip(model.weight_net.state_dict().items(), weight_net.state_dict().values()):
        assert_rel_close(a, b, 1e-7, f"weight_net.{name}")
    for (name, a), b in zip(model.learners.state_dict().items(), learners.state_dict().values()):
        if a.is_floating_point():
            assert_rel_close(a, b, 1e-7, name)
    for i in range(2):
        torch.testing.assert_close(model.banks.bank(i), banks.bank(i), rtol=0, atol=1e-12)


def _ddp_meta_worker(rank: int, world: int, batches: list) -> dict:
    step = _step(DistContext(rank, world, rank, CPU), batch=B // world, lr=1e-2, meta="on", meta_freq=1)
    for k, indices in enumerate(batches):
        step(_slice(_batch(200 + k, indices), rank, B // world), k, epoch=0)
    return {"weights": {k: v.clone() for k, v in step.model.weight_net.state_dict().items()},
            "learners": {k: v.clone() for k, v in step.model.learners.state_dict().items() if "running" not in k}}


def test_under_ddp_the_meta_step_keeps_every_rank_identical() -> None:
    """The inner steps run per rank (official); the outer and weight-network gradients are averaged."""
    gen = torch.Generator().manual_seed(4)
    ranks = run_gloo(_ddp_meta_worker, 2, [torch.randperm(N_DATA, generator=gen)[:B] for _ in range(2)])
    for part in ("weights", "learners"):
        for name, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][name]), (part, name)


def test_eval_classifiers_reports_every_network_stage_and_aggregate(lmcl_run, photo_folder, tmp_path, capsys) -> None:
    from mokd_fast.eval.cli import classifiers_main as classify_main

    assert classify_main(["--checkpoint", str(lmcl_run / "checkpoint.pth"), "--data_path", str(photo_folder),
                          "--input_size", str(SIZE), "--batch_size", "5", "--num_workers", "1", "--device", "cpu",
                          "--output_dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "classifiers.json").read_text())
    assert record["images"] == 16 and record["archs"] == ["resnet18", "resnet18"]
    for net in ("net_1", "net_2"):
        assert set(record[net]) == {"stage_1", "stage_2", "stage_3", "final", "aggregated"}
        for acc in record[net].values():
            assert 0 <= acc["top1"] <= 100 and acc["top4"] == 100.0  # 4 classes: top-4 always hits
    assert "net_1 (resnet18) top-1: stage_1" in capsys.readouterr().out
    status = classify_main(["--checkpoint", str(lmcl_run / "log.jsonl"), "--data_path", str(photo_folder)])
    assert status == 2


def test_the_in_batch_form_trains_without_memory_banks_and_with_the_meta_step() -> None:
    step = _step(memory="batch", meta="on", lr=1e-2)
    model = step.model
    assert model.banks is None and model.sampler is None
    before = {k: v.clone() for k, v in model.weight_net.state_dict().items()}
    out = step(_batch(0, torch.arange(B)), 0, epoch=0)
    assert all(math.isfinite(v.item()) for v in out.values())
    assert any(not torch.equal(v, before[k]) for k, v in model.weight_net.state_dict().items())
    state = model.checkpoint_state()
    assert "lmcl_banks" not in state
    fresh = _step(memory="batch").model
    fresh.load_checkpoint_state(state)
    with pytest.raises(ValueError, match="not an L-MCL checkpoint"):
        _step().model.load_checkpoint_state(state)  # a bank run refuses a checkpoint without banks
