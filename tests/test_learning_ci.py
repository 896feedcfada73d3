"""The learning test: SEED, the cheapest method per step, must gain 10 k-NN points at CI size.

SEED's proof (``tools/learning_proof.py --method seed``) at a reduced size: a ResNet-18 student with
the proof recipe (``configs/proof_seed_cpu.yaml``) distils a frozen teacher on the shapes data and
its held-out k-NN must beat its own random initialisation by 10 points, through the same tool, gates
and evaluation (BatchNorm statistics refreshed for both). One SEED step is one student forward and
backward plus one teacher forward, against DoGo's four forward-backward passes; no
self-supervised proof fits these minutes, so the teacher here is the cheapest trained network: a
supervised ResNet-18 (gate 2's run for 8,000 images, about 66% held-out top-1; its pooled 512-d
features). On 2026-12-05 the student went 21.75 -> 57.75 (+36.0) in 186 steps; the test took 157 s.

The test fails when the method is broken. To see it, set ``LEARNING_TEST_BREAK=detach``: it cuts
the gradient between the student's backbone and its head (the loss then trains the head only), and
the gain is 0.00 (measured on 2026-12-05), so the test fails.
"""

import json
import os

import pytest
import torch

from mokd_fast.bench.learning_proof import main, write_data
from mokd_fast.bench.proof_gates import SupervisedGate, supervised_network
from mokd_fast.eval.data import open_splits
from mokd_fast.methods.seed.student import Student
from mokd_fast.models.features import build_feature_backbone
from mokd_fast.sample_data.shapes import CLASSES

TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE = 200, 40, 64
TEACHER = SupervisedGate(samples=8_000, target=80.0)


def _detached_embed(self: Student, x: torch.Tensor) -> torch.Tensor:
    """``Student.embed`` with the backbone's features detached: only the head can learn."""
    return self.head(self._features(self.backbone, x).detach())


@pytest.mark.learning
def test_seed_gains_ten_knn_points_over_its_random_initialisation(tmp_path, monkeypatch, capsys) -> None:
    if os.environ.get("LEARNING_TEST_BREAK") == "detach":
        monkeypatch.setattr(Student, "embed", _detached_embed)
    out = tmp_path / "proof"
    data = write_data(out / "data", 0, TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE)
    train, val, _ = open_splits(data)
    torch.manual_seed(100)  # another draw than the student's
    backbone = build_feature_backbone("resnet18").module
    teacher, record = supervised_network(backbone, "cnn", train, val, len(CLASSES), SIZE, torch.device("cpu"), 2,
                                         TEACHER)
    torch.save(teacher.state_dict(), out / "teacher.pth")
    status = main(["--method", "seed", "--out", str(out), "--train_per_class", str(TRAIN_PER_CLASS),
                   "--val_per_class", str(VAL_PER_CLASS), "--gate_samples", "64", "--gate_top1", "0",
                   "--min_gain", "10", "--knn_every", "100",
                   "--", "--teacher", str(out / "teacher.pth"), "--teacher_arch", "resnet18", "--epochs", "3"])
    proof = json.loads((out / "learning.json").read_text())
    assert status == 0, (f"teacher top-1 {record['top1']:.1f}; student k-NN {proof.get('random_init_knn')} -> "
                         f"{proof.get('trained_knn')}; {capsys.readouterr().out[-2000:]}")
    assert proof["learned"] and proof["collapse_warning"] is None
