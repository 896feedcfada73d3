"""tools/learning_proof.py's mechanics at CI size: data, pixel k-NN, a real run, learning.json and the verdict."""

import json
import math

import pytest
import torch
from torch import nn

from mokd_fast.bench.learning_proof import (
    distinct_architectures,
    main,
    recipe_path,
    write_data,
)
from mokd_fast.bench.proof_gates import SupervisedGate, supervised_network
from mokd_fast.cli import parse_config
from mokd_fast.eval.data import open_splits
from mokd_fast.methods import METHODS
from mokd_fast.models.features import build_feature_backbone
from mokd_fast.sample_data.shapes import CLASSES

TINY = ["--train_per_class", "6", "--val_per_class", "3", "--knn_k", "5", "--gate_samples", "16", "--gate_top1", "0",
        "--gate_knn_max", "100"]
SHORT_RUN = ["--", "--max_steps", "4", "--batch_size_per_gpu", "8", "--log_every", "2", "--num_workers", "0"]


def test_a_short_run_writes_the_whole_record(tmp_path, capsys) -> None:
    out = tmp_path / "proof"
    status = main(["--out", str(out), *TINY, "--min_gain", "-100", *SHORT_RUN])
    assert status == 0, capsys.readouterr()
    record = json.loads((out / "learning.json").read_text())
    assert record["method"] == "mokd" and record["learned"] and record["collapse_warning"] is None
    assert 0 <= record["pixel_knn"] <= 100 and record["steps"] == 4
    assert set(record["random_init_knn"]) == set(record["trained_knn"]) == {"cnn", "vit"}
    assert [point["step"] for point in record["knn_curve"]] == [0, 4]  # before the first step and after the last
    for name in ("cnn", "vit"):
        assert record["gain"][name] == record["trained_knn"][name] - record["random_init_knn"][name]
        assert 0 <= record["final_monitors"][f"teacher_{name}_spread"]
    assert record["settings"]["arch_cnn"] == "resnet18" and record["train_flags"] == SHORT_RUN[1:]
    gates = record["gates"]
    assert gates["random_init"]["passed"] and gates["supervised"]["passed"] and gates["supervised"]["backbone"] == "cnn"
    assert gates["supervised_vit"]["passed"] and gates["supervised_vit"]["backbone"] == "vit"  # each architecture
    assert gates["random_init"]["knn_top1"] == record["random_init_knn"]  # built as train.py builds it: same weights
    assert gates["supervised"]["samples"] >= 16 and record["difficulty"] == 0 and record["knn_bn"] == "refresh"
    assert "k-NN top-1" in capsys.readouterr().out


@pytest.mark.parametrize(("flag", "value", "which"),
                         [("--gate_knn_max", "-1", "gate 1"), ("--gate_top1", "101", "gate 2")])
def test_a_failed_gate_stops_the_proof_before_pre_training(tmp_path, capsys, flag, value, which) -> None:
    out = tmp_path / "proof"
    assert main(["--out", str(out), *TINY, flag, value, *SHORT_RUN]) == 1
    record = json.loads((out / "learning.json").read_text())
    assert not record["learned"] and not (out / "run").exists()
    assert [g["passed"] for g in record["gates"].values()] == ([False] if which == "gate 1" else [True, False])
    assert f"GATE FAILED: {which}" in capsys.readouterr().out


def test_gate_2_runs_once_per_architecture() -> None:
    peer_1, peer_2, other = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(3, 3)
    backbones = {"peer_1": (peer_1, "cnn"), "peer_2": (peer_2, "cnn"), "vit": (other, "vit")}
    assert list(distinct_architectures(backbones)) == ["peer_1", "vit"]  # same shapes: one run for both peers
    wider = {"peer_1": (peer_1, "cnn"), "peer_2": (nn.Linear(4, 5), "cnn")}
    assert list(distinct_architectures(wider)) == ["peer_1", "peer_2"]


def test_gate_2_trains_a_teachers_frozen_backbone_whole(tmp_path) -> None:
    """MOKD's eval backbones are its EMA teachers, whose parameters have requires_grad off: gate 2 must
    still train the backbone (on 2026-12-05 it trained only the linear classifier: 13.5% after 20,000 images)."""
    train, val, _ = open_splits(write_data(tmp_path / "data", 0, 4, 2, 32))
    teacher = build_feature_backbone("resnet18").module.requires_grad_(False)
    before = [p.detach().clone() for p in teacher.parameters()]
    trained, record = supervised_network(teacher, "cnn", train, val, len(CLASSES), 32, torch.device("cpu"), 0,
                                         SupervisedGate(samples=16, target=100.0, batch_size=8, eval_every=16))
    assert record["samples"] >= 16
    assert not torch.equal(next(trained.parameters()), before[0])  # the stem convolution learnt
    assert all(torch.equal(p, b) and not p.requires_grad for p, b in zip(teacher.parameters(), before))


def test_a_collapsed_run_is_not_called_learned(tmp_path, capsys) -> None:
    out = tmp_path / "proof"
    status = main(["--out", str(out), *TINY, "--min_gain", "-100", *SHORT_RUN, "--teacher_temp", "100",
                   "--warmup_teacher_temp", "100", "--collapse_window", "1"])
    assert status == 1
    record = json.loads((out / "learning.json").read_text())
    assert not record["learned"] and record["collapse_warning"].startswith("WARNING: collapse at step 2")
    assert record["final_monitors"]["teacher_cnn_sample_entropy"] > 0.98 * math.log(record["settings"]["out_dim"])
    assert "NOT LEARNED" in capsys.readouterr().out


def test_every_method_has_a_cpu_and_a_gpu_recipe_and_a_missing_one_is_named(tmp_path, capsys) -> None:
    for method in METHODS:
        cpu, gpu = (parse_config(["--config", str(recipe_path(method, device))]) for device in ("cpu", "cuda"))
        assert (cpu[1].device, gpu[1].device) == ("cpu", "cuda"), method
        # part 9: the same proof at (about) ten times the samples, the same batch
        assert gpu[0].epochs * gpu[1].batch_size_per_gpu >= 7 * cpu[0].epochs * cpu[1].batch_size_per_gpu, method
    assert main(["--out", str(tmp_path), "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such recipe" in capsys.readouterr().err


def test_seed_refuses_the_teacher_of_a_dogo_proof_that_did_not_learn(tmp_path, capsys) -> None:
    (tmp_path / "dogo").mkdir()
    (tmp_path / "dogo" / "learning.json").write_text(json.dumps({"learned": False}))
    assert main(["--method", "seed", "--out", str(tmp_path)]) == 2
    assert "the dogo proof in" in capsys.readouterr().err


def test_seed_distils_the_dogo_proofs_first_peer_and_reports_its_knn(tmp_path, capsys) -> None:
    """The teacher is the DoGo proof found in OUT/dogo (here a short one), and the record carries its k-NN."""
    assert main(["--method", "dogo", "--out", str(tmp_path / "dogo"), *TINY, "--min_gain", "-100", *SHORT_RUN]) == 0
    assert main(["--method", "seed", "--out", str(tmp_path), *TINY, "--min_gain", "-100", *SHORT_RUN]) == 0
    record, teacher = (json.loads((folder / "learning.json").read_text()) for folder in (tmp_path, tmp_path / "dogo"))
    assert record["settings"]["teacher"] == str(tmp_path / "dogo" / "run" / "checkpoint.pth")
    assert record["settings"]["teacher_key"] == record["teacher"]["key"] == "peer_1"
    assert record["teacher"]["trained_knn"] == teacher["trained_knn"]["peer_1"]
    assert record["teacher"]["random_init_knn"] == teacher["random_init_knn"]["peer_1"]
    assert set(record["trained_knn"]) == {"student"} and record["steps"] == 4


def test_lmcl_is_judged_on_its_aggregated_classifiers_too(tmp_path, capsys) -> None:
    """L-MCL (supervised) learns only when each network's aggregated classifier reaches --min_top1 on val."""
    out = tmp_path / "proof"
    assert main(["--method", "lmcl", "--out", str(out), *TINY, "--min_gain", "-100", "--min_top1", "101",
                 *SHORT_RUN, "--neg_k", "4"]) == 1
    record = json.loads((out / "learning.json").read_text())
    classifiers = record["classifiers"]
    assert not record["learned"] and classifiers["min_top1"] == 101 and classifiers["images"] == 30
    assert {"net_1", "net_2"} <= set(classifiers)
    assert all(0 <= classifiers[net]["aggregated"]["top1"] <= 100 for net in ("net_1", "net_2"))
    assert "aggregated classifier held-out top-1" in capsys.readouterr().out
