"""torchrun with 2 gloo processes on CPU: equal batch counts, replicas stay identical, finite losses."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import TINY_RUN_FLAGS
from tests.helpers import assert_rel_close, free_port

REPO = Path(__file__).resolve().parents[1]


def _torchrun(photo_folder: Path, out: Path, *flags: str) -> list[dict]:
    """Trains with 2 gloo processes; returns each rank's final state."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(REPO / "tests/ddp_train_worker.py"), *TINY_RUN_FLAGS, "--batch_size_per_gpu", "2",
        "--data_path", str(photo_folder), "--output_dir", str(out), "--tensorboard", "False", *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_ddp_speed_switches_do_not_change_training(photo_folder, tmp_path):
    on = _torchrun(photo_folder, tmp_path / "on", "--max_steps", "3")
    off = _torchrun(photo_folder, tmp_path / "off", "--max_steps", "3", "--ddp_static_graph", "False",
                    "--ddp_bucket_view", "False")
    for name, value in on[0]["students"].items():
        if value.is_floating_point():
            assert_rel_close(value, off[0]["students"][name], 1e-6, f"students.{name}")


def test_two_process_ddp_keeps_replicas_identical(photo_folder, tmp_path):
    out = tmp_path / "run"
    ranks = _torchrun(photo_folder, out, "--max_steps", "6")
    assert ranks[0]["batches_per_epoch"] == ranks[1]["batches_per_epoch"] == 4  # 16 images / (2 ranks x 2)
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6
    for part in ("teachers", "students"):
        for name, value in ranks[0][part].items():
            if "running_" in name or "num_batches_tracked" in name:
                continue  # teacher BN statistics are per rank on CPU (SyncBatchNorm is CUDA-only)
            assert torch.equal(value, ranks[1][part][name]), f"{part}.{name} differs between ranks"
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))  # rank 0 alone writes
    assert all(math.isfinite(line[k]) for line in lines for k in ("loss_cnn", "loss_vit", "vit_search"))
    assert lines[0]["lr_cnn"] == 0.0 and lines[-1]["lr_cnn"] > 0.0
    ckpt = torch.load(out / "checkpoint.pth")
    assert ckpt["mokd_fast"]["step"] == 6 and len(ckpt["mokd_fast"]["rng"]) == 2
    assert "module.backbone.conv1.weight" in ckpt["student_cnn"]  # official layout
