"""MCL-MoCo through the engine: the official step, shuffle BN across ranks, DDP, train.py end to end, resume, eval."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from mokd_fast.cli import main as train_main
from mokd_fast.core.distributed import DistContext
from mokd_fast.core.errors import UsageError
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods.common.schedules import epoch_step_schedule
from mokd_fast.methods.mcl.config import MCLConfig, MCLTrainConfig
from mokd_fast.methods.mcl.shuffle import step_permutation
from pipelines.batch import MultiCropBatch
from tests.helpers import assert_rel_close, run_gloo
from tests.official_mcl import OfficialMCL

CPU = torch.device("cpu")
B, SIZE, QUEUE = 4, 32, 16


def _step(ctx: DistContext | None = None, batch: int = B, archs=("resnet18", "resnet18"), **method) -> TrainStep:
    torch.manual_seed(0)
    cfg = MCLConfig(archs=archs, global_size=SIZE, queue_size=QUEUE, epochs=4, **method)
    train = MCLTrainConfig(batch_size_per_gpu=batch, device="cpu", compile=False, channels_last=False, scale_lr=False,
                           schedule=(1, 2))
    return TrainStep(cfg, train, ctx or DistContext(0, 1, 0, CPU), iters_per_epoch=1)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def dtype(request):
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(torch.float32)


def test_engine_step_equals_the_official_mcl_step(dtype) -> None:
    """Three steps (lr 0.03, x0.1 at epochs 1 and 2) against the official forward, loss, SGD and enqueue.

    fp64: losses, query and key encoders and queues to 1e-9 (our key EMA runs after each step, the
    official one at the start of the next forward: one extra official update lines them up).
    fp32: the first loss to 1e-5.
    """
    step = _step()
    model = step.model
    official = OfficialMCL(copy.deepcopy(list(model.peers.encoders)), copy.deepcopy(list(model.keys.encoders)),
                           torch.stack([q.queue.T for q in model.queues]))
    params = [p for enc in official.q for p in enc.parameters()]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4, foreach=False)
    gen = torch.Generator().manual_seed(1)
    for k in range(3):
        views = torch.randn(2 * B, 3, SIZE, SIZE, generator=gen)
        got = step(MultiCropBatch(views, None, n_global=2), k, epoch=k)
        for group in opt.param_groups:
            group["lr"] = 0.03 * 0.1 ** sum(k >= m for m in (1, 2))
        opt.zero_grad()
        loss = official.loss(*views.chunk(2))
        loss.backward()
        opt.step()
        if dtype == torch.float64 or k == 0:
            tol = 1e-9 if dtype == torch.float64 else 1e-5
            assert abs(got["loss_peers"].item() - loss.item()) <= tol, (k, got["loss_peers"].item(), loss.item())
    if dtype != torch.float64:
        return
    official._momentum_update()
    for ours, theirs in ((model.peers.encoders, official.q), (model.keys.encoders, official.k)):
        for enc, ref in zip(ours, theirs):
            for (name, a), b in zip(enc.state_dict().items(), ref.state_dict().values()):
                if a.is_floating_point():
                    assert_rel_close(a, b, 1e-9, name)
    for i, queue in enumerate(model.queues):
        torch.testing.assert_close(queue.queue, official.queue[i].T, rtol=0, atol=1e-12)
        assert int(queue.ptr) == official.ptr[i] == 3 * B % QUEUE


def test_the_step_schedule_is_the_official_per_epoch_drop() -> None:
    got = epoch_step_schedule(0.03, (120, 160), 200, 2)
    want = [0.03 * 0.1 ** sum(e >= m for m in (120, 160)) for e in range(200) for _ in range(2)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)


def _shuffle_worker(rank: int, world: int, x_all: torch.Tensor, key_bn: str) -> torch.Tensor:
    step = _step(DistContext(rank, world, rank, CPU), batch=B, key_bn=key_bn)
    return step.model._keys(x_all[rank * B:(rank + 1) * B], 7)[0]


def test_shuffle_bn_encodes_a_permuted_slice_and_returns_each_ranks_keys() -> None:
    """Two ranks: the keys equal the key encoder (train-mode BN) run on each slice of the permuted global batch."""
    x_all = torch.randn(2 * B, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    got = run_gloo(_shuffle_worker, 2, x_all, "shuffle")
    local = run_gloo(_shuffle_worker, 2, x_all, "local")
    model = _step().model
    perm = step_permutation(2 * B, 0, 7, CPU)
    with torch.no_grad():
        shuffled = torch.cat([model.keys(x_all[perm[r * B:(r + 1) * B]])[0] for r in range(2)])
    want = shuffled[torch.argsort(perm)]
    for rank in range(2):
        torch.testing.assert_close(got[rank], want[rank * B:(rank + 1) * B], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(local[0], want[:B], atol=1e-4)  # per-rank statistics give other keys


def _ddp_worker(rank: int, world: int, batches: list, negatives: str = "queue") -> dict:
    step = _step(DistContext(rank, world, rank, CPU), batch=B // world, archs=("vit_tiny", "vit_tiny"),
                 negatives=negatives)
    per = B // world
    losses = []
    for k, views in enumerate(batches):
        q, kv = views.chunk(2)
        mine = torch.cat([q[rank * per:(rank + 1) * per], kv[rank * per:(rank + 1) * per]])
        losses.append(step(MultiCropBatch(mine, None, n_global=2), k, epoch=k)["loss_peers"].item())
    return {"peers": {k: v.clone() for k, v in step.model.peers.state_dict().items()},
            "keys": {k: v.clone() for k, v in step.model.keys.state_dict().items()},
            "queues": [q.queue.clone() for q in step.model.queues], "losses": losses}


@pytest.mark.parametrize("negatives", ["queue", "batch"])
def test_two_process_ddp_equals_one_process_on_the_concatenated_batch(negatives) -> None:
    """ViT peers (no BatchNorm, so shuffle BN changes nothing): the step is a function of the global batch only.

    With in-batch negatives each rank's queries contrast against every rank's keys, at its own offset."""
    gen = torch.Generator().manual_seed(5)
    batches = [torch.randn(2 * B, 3, SIZE, SIZE, generator=gen) for _ in range(3)]
    ranks = run_gloo(_ddp_worker, 2, batches, negatives)
    single = _ddp_worker(0, 1, batches, negatives)
    for rank in (0, 1):
        for part in ("peers", "keys"):
            for name, value in single[part].items():
                torch.testing.assert_close(ranks[rank][part][name], value, rtol=1e-5, atol=1e-6, msg=name)
        for got, want in zip(ranks[rank]["queues"], single["queues"]):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert single["losses"] == pytest.approx([(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])],
                                             rel=1e-5)


def test_heterogeneous_peers_train_together() -> None:
    step = _step(archs=("resnet18", "vit_tiny", "resnet18"))
    out = step(MultiCropBatch(torch.randn(2 * B, 3, SIZE, SIZE), None, n_global=2), 0, 0)
    spreads = {f"peer_{i}_spread" for i in (1, 2, 3)}
    assert set(out) == {"vcl", "svcl", "icl", "sicl", "loss_peers", *spreads}
    assert all(math.isfinite(v.item()) for v in out.values())


def _flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--method", "mcl", "--archs", "resnet18", "resnet18", "--global_size", str(SIZE), "--queue_size", "24",
            "--epochs", "2", "--batch_size_per_gpu", "4", "--num_workers", "1", "--log_every", "1",
            "--ckpt_every_steps", "0", "--device", "cpu", "--data_path", str(data), "--output_dir", str(out),
            "--tensorboard", "False", *extra]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def mcl_run(photo_folder, tmp_path_factory):
    """An uninterrupted 2-epoch MCL-MoCo run (8 steps) of two ResNet-18 peers."""
    out = tmp_path_factory.mktemp("mcl")
    assert train_main(_flags(photo_folder, out)) == 0
    return out


def test_train_py_runs_mcl_end_to_end(mcl_run) -> None:
    lines = [json.loads(line) for line in (mcl_run / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert {"vcl", "svcl", "icl", "sicl", "loss_peers", "lr"} <= set(lines[0])
    assert all(math.isfinite(v) for line in lines for v in line.values())
    assert lines[0]["lr"] == pytest.approx(0.03 * 4 / 256)
    ckpt = _load(mcl_run / "checkpoint.pth")
    assert {"peer_1", "peer_2", "arch_1", "key_1", "key_2", "mcl_queues", "optimizer_peers", "epoch"} <= set(ckpt)
    assert ckpt["mokd_fast"]["config"]["method"] == "mcl" and ckpt["epoch"] == 2
    assert all(int(q["ptr"]) == 8 * 4 % 24 for q in ckpt["mcl_queues"].values())


def test_mcl_resume_from_a_mid_epoch_stop_is_bitwise_exact(mcl_run, photo_folder, tmp_path) -> None:
    out = tmp_path / "run"
    assert train_main(_flags(photo_folder, out, "--max_steps", "3")) == 0
    assert train_main(_flags(photo_folder, out, "--resume", str(out / "checkpoint.pth"))) == 0
    ref, got = _load(mcl_run / "checkpoint.pth"), _load(out / "checkpoint.pth")
    for entry in ("peer_1", "peer_2", "key_1", "key_2"):
        for name, value in ref[entry].items():
            assert torch.equal(value, got[entry][name]), (entry, name)
    for queue, state in ref["mcl_queues"].items():
        for name, value in state.items():
            assert torch.equal(value, got["mcl_queues"][queue][name]), (queue, name)
    logs = [[json.loads(line)["loss_peers"] for line in (r / "log.jsonl").read_text().splitlines()]
            for r in (mcl_run, out)]
    assert logs[0] == logs[1]


def test_eval_tools_read_each_peer(mcl_run) -> None:
    from mokd_fast.eval.features import FeatureNet
    from mokd_fast.methods.mcl.method import Encoder
    from mokd_fast.models.weights import load_backbone

    ckpt = _load(mcl_run / "checkpoint.pth")
    images = torch.randn(3, 3, SIZE, SIZE)
    for i in (1, 2):
        enc = Encoder("resnet18", 128, mlp=False)
        enc.load_state_dict(ckpt[f"peer_{i}"])
        loaded = load_backbone(mcl_run / "checkpoint.pth", f"peer_{i}", None)
        assert (loaded.arch, loaded.kind) == ("resnet18", "cnn")
        with torch.no_grad():
            torch.testing.assert_close(FeatureNet(loaded)(images), enc.eval().backbone(images))


def test_head_bn_puts_batchnorm_in_the_mlp_head_only_when_asked() -> None:
    from mokd_fast.methods.mcl.method import Encoder

    def norms(enc: Encoder) -> int:
        return sum(isinstance(m, torch.nn.BatchNorm1d) for m in enc.head.modules())

    assert norms(Encoder("resnet18", 128, mlp=True)) == 0  # official MoCo v2 MLP: Linear-ReLU-Linear
    with_bn = Encoder("resnet18", 128, mlp=True, head_bn=True)
    assert norms(with_bn) == 1 and isinstance(with_bn.head[1], torch.nn.BatchNorm1d)
    assert with_bn(torch.randn(4, 3, SIZE, SIZE)).shape == (4, 128)
    with pytest.raises(ValueError, match="--head_bn needs --mlp"):
        MCLConfig(head_bn=True)


def test_bn_splits_emulates_shuffle_bn_on_one_process() -> None:
    """--bn_splits 4: queries normalised per group of 2 images in order, keys per group of the step's permutation,
    then put back; 1 (official on one process) normalises both with the whole batch."""
    from mokd_fast.methods.mcl.method import grouped_forward

    step = _step(batch=8, bn_splits=4)
    model = step.model
    x = torch.randn(8, 3, SIZE, SIZE)
    perm = step_permutation(8, model.train_cfg.seed, 5, CPU)
    with torch.no_grad():
        keys = model._keys(x, 5)
        manual = [torch.cat([enc(x[perm][i:i + 2]) for i in range(0, 8, 2)]) for enc in model.keys.encoders]
        whole = model.keys(x)
        queries = grouped_forward(model.peers, x, 4)
    for key, want, plain in zip(keys, manual, whole):
        torch.testing.assert_close(key, torch.nn.functional.normalize(want, dim=1)[torch.argsort(perm)])
        assert not torch.allclose(key, plain, atol=1e-3)  # the whole batch's statistics give other keys
    for query, enc in zip(queries, model.peers.encoders):
        with torch.no_grad():
            want = torch.cat([enc(x[i:i + 2]) for i in range(0, 8, 2)])
        torch.testing.assert_close(query, torch.nn.functional.normalize(want, dim=1))
    out = step(MultiCropBatch(torch.randn(16, 3, SIZE, SIZE), None, n_global=2), 0, 0)
    assert math.isfinite(out["loss_peers"].item())
    with pytest.raises(UsageError, match="--bn_splits 3 must divide"):
        _step(batch=8, bn_splits=3)
    with pytest.raises(UsageError, match="under DDP"):
        model.distribute(CPU)
