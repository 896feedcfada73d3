"""DoGo through the engine: the official step's weights, fp32 losses under autocast, train.py end to end, resume, DDP."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mokd_fast.cli import main as train_main
from mokd_fast.core.distributed import DistContext
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods.dogo.config import DoGoConfig, DoGoTrainConfig
from pipelines.batch import MultiCropBatch
from tests.helpers import assert_rel_close, free_port
from tests.official_dogo import official_step_totals

REPO = Path(__file__).resolve().parents[1]
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
B, SIZE = 4, 32
# A tiny but real run: two ResNet-18 peers (CIFAR stem) on 32-px views, 4 images per step, 4 steps per epoch.
TINY_DOGO_FLAGS = ["--method", "dogo", "--image_size", "32", "--n_proj_1", "32", "--epochs", "2",
                   "--batch_size_per_gpu", "4", "--num_workers", "1", "--log_every", "1", "--ckpt_every_steps", "0",
                   "--device", "cpu"]


def _batch(seed: int, size: int = SIZE) -> MultiCropBatch:
    gen = torch.Generator().manual_seed(seed)
    return MultiCropBatch(torch.randn(4 * B, 3, size, size, generator=gen), None, None, n_global=4)


def _step(size: int = SIZE, **train) -> TrainStep:
    torch.manual_seed(0)
    method = DoGoConfig(image_size=size, n_proj_1=32, epochs=2)
    cfg = DoGoTrainConfig(batch_size_per_gpu=B, device="cpu", compile=False, channels_last=False, **train)
    return TrainStep(method, cfg, CPU, iters_per_epoch=4)


@pytest.fixture
def fp64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_engine_step_equals_the_official_two_pass_adam_step(fp64) -> None:
    """Our step (fused Adam, one backward of L1 + L2) against the official loop on a copy of the same peers."""
    ours = _step()
    peers = copy.deepcopy(ours.model.pair.peers)  # before any step: the same weights and BN buffers
    official_opts = [torch.optim.Adam(p.parameters(), lr=3e-4, weight_decay=1e-6, foreach=False) for p in peers]
    kinds = ("simclr", "simsiam")
    for step in range(3):
        batch = _batch(step)
        got = ours(batch, step, epoch=0)
        x1, y1, x2, y2 = batch.global_crops.chunk(4)
        outputs = ((peers[0](x1), peers[0](y1)), (peers[1](x2), peers[1](y2)))
        l1, l2 = official_step_totals(kinds, outputs, B)
        for opt in official_opts:
            opt.zero_grad()
        l1.backward()  # the official order: L1, then L2, then both optimisers
        l2.backward()
        for opt in official_opts:
            opt.step()
        assert_rel_close(got["loss_peer_1"], l1.detach(), 1e-9, f"step {step} L1")
        assert_rel_close(got["loss_peer_2"], l2.detach(), 1e-9, f"step {step} L2")
    # Adam's g / (sqrt(v) + eps) magnifies rounding where a gradient is near eps: rtol 1e-6 (as the MOKD switch
    # tests). Parameters whose true gradient is zero (a BatchNorm shift in front of a BatchNorm) move by rounding
    # noise alone, ~lr * 1e-17 / eps = 3e-13 per step: atol 1e-10 covers them and nothing else.
    for (name, p), q in zip(ours.model.pair.peers.state_dict().items(), peers.state_dict().values(), strict=True):
        if p.is_floating_point():
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-10, msg=f"after 3 steps: {name}")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_terms_are_fp32_under_autocast_and_fp16_scales_each_peer(precision) -> None:
    step = _step(16, precision=precision)  # 16-px views: CPU half-precision convolutions are slow
    out = step(_batch(0, 16), 0, epoch=0)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in out.values())
    assert set(out) == {"ssl_1", "kl_1", "ssl_2", "kl_2", "peer_1_spread", "peer_2_spread", "loss_peer_1", "loss_peer_2"}
    assert (step.scalers is not None) == (precision == "fp16")
    if step.scalers:
        assert set(step.scalers) == {"peer_1", "peer_2"}


def _flags(data: Path, out: Path, *extra: str) -> list[str]:
    return [*TINY_DOGO_FLAGS, "--data_path", str(data), "--output_dir", str(out), "--tensorboard", "False", *extra]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def dogo_run(photo_folder, tmp_path_factory):
    """An uninterrupted 2-epoch DoGo run (8 steps)."""
    out = tmp_path_factory.mktemp("dogo")
    assert train_main(_flags(photo_folder, out)) == 0
    return out


def test_train_py_runs_dogo_end_to_end(dogo_run) -> None:
    lines = [json.loads(line) for line in (dogo_run / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert set(lines[0]) == {"step", "epoch", "ssl_1", "kl_1", "ssl_2", "kl_2", "peer_1_spread", "peer_2_spread",
                             "loss_peer_1", "loss_peer_2", "lr",
                             "samples_per_s", "data_wait"}
    assert all(math.isfinite(v) for line in lines for v in line.values())
    assert all(line["lr"] == pytest.approx(3e-4) for line in lines)  # official: constant, not batch-scaled
    ckpt = _load(dogo_run / "checkpoint.pth")
    assert {"peer_1", "peer_2", "arch_1", "optimizer_peer_1", "optimizer_peer_2", "epoch", "mokd_fast"} <= set(ckpt)
    assert ckpt["mokd_fast"]["config"]["method"] == "dogo" and ckpt["epoch"] == 2
    assert "method: dogo" in (dogo_run / "config.yaml").read_text()


def test_dogo_resume_from_a_mid_epoch_stop_is_bitwise_exact(dogo_run, photo_folder, tmp_path) -> None:
    out = tmp_path / "run"
    assert train_main(_flags(photo_folder, out, "--max_steps", "3")) == 0
    assert train_main(_flags(photo_folder, out, "--resume", str(out / "checkpoint.pth"))) == 0
    ref, got = _load(dogo_run / "checkpoint.pth"), _load(out / "checkpoint.pth")
    for peer in ("peer_1", "peer_2"):
        for name, value in ref[peer].items():
            assert torch.equal(value, got[peer][name]), (peer, name)
    for key in ("optimizer_peer_1", "optimizer_peer_2"):
        for pid, state in ref[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(got[key]["state"][pid][name])), (key, name)
    ours = [json.loads(line)["loss_peer_1"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert ours == [json.loads(line)["loss_peer_1"] for line in (dogo_run / "log.jsonl").read_text().splitlines()]


def test_a_mokd_checkpoint_does_not_resume_a_dogo_run(dogo_run, photo_folder, tmp_path, capsys) -> None:
    from tests.conftest import TINY_RUN_FLAGS

    mokd = tmp_path / "mokd"
    assert train_main([*TINY_RUN_FLAGS, "--data_path", str(photo_folder), "--output_dir", str(mokd), "--max_steps", "1",
                       "--tensorboard", "False"]) == 0
    status = train_main(_flags(photo_folder, tmp_path / "d", "--resume", str(mokd / "checkpoint.pth")))
    assert status == 2 and "is a checkpoint of --method mokd, this run is --method dogo" in capsys.readouterr().err


def test_two_process_ddp_dogo_keeps_peers_identical(photo_folder, tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "tests/ddp_train_worker.py"), *_flags(photo_folder, out, "--batch_size_per_gpu", "2",
                                                           "--max_steps", "4")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    for name, value in ranks[0]["model"].items():
        if "running_" in name or "num_batches_tracked" in name:
            continue  # BatchNorm statistics are per rank (the official DataParallel run normalises per replica)
        assert torch.equal(value, ranks[1]["model"][name]), f"{name} differs between ranks"
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss_peer_1"]) for line in lines)


def test_eval_tools_read_each_peer_of_a_dogo_checkpoint(dogo_run) -> None:
    """``--checkpoint_key peer_1|peer_2``: the peer's encoder (CIFAR stem rebuilt) with its trained weights."""
    from mokd_fast.eval.features import FeatureNet
    from mokd_fast.methods.dogo.method import DoGo
    from mokd_fast.models.weights import load_backbone

    ckpt = _load(dogo_run / "checkpoint.pth")
    method = DoGo(DoGoConfig(image_size=SIZE, n_proj_1=32, epochs=2))
    method.load_checkpoint_state(ckpt)
    images = torch.randn(3, 3, SIZE, SIZE)
    for i, peer in enumerate(method.pair.peers, start=1):
        loaded = load_backbone(dogo_run / "checkpoint.pth", f"peer_{i}", None)
        assert (loaded.arch, loaded.kind) == ("resnet18", "cnn") and loaded.module.conv1.kernel_size == (3, 3)
        peer.eval()
        with torch.no_grad():
            torch.testing.assert_close(FeatureNet(loaded)(images), peer.encoder(images))


def test_two_backward_passes_are_refused_under_ddp() -> None:
    step = _step()
    step.model.cfg.single_backward = False
    with pytest.raises(ValueError, match="single_backward"):
        step.model.distribute(torch.device("cpu"))
