"""train.py end to end on real JPEGs: outputs, exact resume (clean stop and SIGKILL), NaN guard, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mokd_fast.cli import main as train_main
from mokd_fast.methods.common.schedules import cosine_schedule
from mokd_fast.methods.mokd.losses import OFFICIAL_LOSS_STATE, MOKDCriterion
from tests.conftest import TINY_RUN_FLAGS

REPO = Path(__file__).resolve().parents[1]
MODEL_KEYS = ("student_cnn", "teacher_cnn", "student_vit", "teacher_vit")


def _flags(data: Path, out: Path, *extra: str) -> list[str]:
    return [*TINY_RUN_FLAGS, "--data_path", str(data), "--output_dir", str(out), *extra]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


def _assert_same_training_state(a: dict, b: dict) -> None:
    for key in MODEL_KEYS:
        assert a[key].keys() == b[key].keys()
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs"
    for key in OFFICIAL_LOSS_STATE:
        assert torch.equal(a[key]["center"], b[key]["center"]), key
    for key in ("optimizer_cnn", "optimizer_vit"):
        for pid, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[key]["state"][pid][name])), (key, pid, name)


@pytest.fixture(scope="module")
def reference_run(photo_folder, tmp_path_factory):
    """An uninterrupted 2-epoch run (8 steps), the yardstick of the resume tests."""
    out = tmp_path_factory.mktemp("reference")
    assert train_main(_flags(photo_folder, out)) == 0
    return out


def test_run_leaves_checkpoints_logs_config_and_events(reference_run):
    out = reference_run
    assert sorted(p.name for p in out.glob("checkpoint*.pth")) == ["checkpoint.pth", "checkpoint0000.pth", "checkpoint0001.pth"]
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    expected = {"step", "epoch", "cnn_self", "cnn_thead", "cnn_cross", "cnn_search", "vit_self", "vit_thead",
                "vit_cross", "vit_search", "loss_cnn", "loss_vit", "lr_cnn", "wd_cnn", "lr_vit", "wd_vit",
                "momentum", "teacher_temp_cnn", "teacher_temp_vit", "samples_per_s", "data_wait"}
    expected |= {f"teacher_{m}_{s}" for m in ("cnn", "vit") for s in ("mean_entropy", "sample_entropy", "distinct", "spread")}
    assert set(lines[0]) == expected
    assert all(math.isfinite(v) for line in lines for v in line.values())
    assert lines[-1]["epoch"] == 1 and 0 <= lines[-1]["data_wait"] <= 1 and lines[-1]["samples_per_s"] > 0
    assert lines[0]["teacher_temp_cnn"] == pytest.approx(0.04) and lines[-1]["teacher_temp_vit"] == pytest.approx(0.04)
    ckpt = _load(out / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["mokd_fast"]["step"], ckpt["arch_cnn"]) == (2, 8, "resnet18")
    assert _load(out / "checkpoint0000.pth")["mokd_fast"]["step"] == 4
    saved = (out / "config.yaml").read_text()
    assert "arch_vit: vit_tiny" in saved and "batch_size_per_gpu: 4" in saved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["samples_per_s"] > 0
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert not list(out.glob(".*tmp"))


def test_resume_from_a_mid_epoch_stop_is_bitwise_exact(reference_run, photo_folder, tmp_path):
    out = tmp_path / "run"
    assert train_main(_flags(photo_folder, out, "--max_steps", "3")) == 0  # stops mid-epoch 0 (4 steps/epoch)
    assert _load(out / "checkpoint.pth")["mokd_fast"]["batch_in_epoch"] == 3
    assert train_main(_flags(photo_folder, out, "--resume", str(out / "checkpoint.pth"))) == 0
    _assert_same_training_state(_load(reference_run / "checkpoint.pth"), _load(out / "checkpoint.pth"))
    ours = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (reference_run / "log.jsonl").read_text().splitlines()]
    assert [o["loss_vit"] for o in ours] == [r["loss_vit"] for r in ref]


def test_sigkill_then_resume_matches_the_uninterrupted_run(reference_run, photo_folder, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "train.py"), *_flags(photo_folder, out, "--ckpt_every_steps", "1", "--tensorboard", "False")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _load(out / "checkpoint.pth")["mokd_fast"]["step"]
    assert 1 <= killed_at < 8  # a kill during a checkpoint write leaves the previous one whole
    assert train_main(_flags(photo_folder, out, "--resume", str(out / "checkpoint.pth"), "--tensorboard", "False")) == 0
    _assert_same_training_state(_load(reference_run / "checkpoint.pth"), _load(out / "checkpoint.pth"))
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 9))  # lines the killed run wrote past its checkpoint were replaced


def test_non_finite_loss_stops_naming_term_and_step_and_keeps_the_last_good_checkpoint(
        photo_folder, tmp_path, monkeypatch, capsys):
    real = MOKDCriterion.forward
    calls = {"n": 0}

    def poisoned(self, students, teachers, epoch):
        terms = real(self, students, teachers, epoch)
        calls["n"] += 1
        if calls["n"] == 6:  # step 5 (counting from 0)
            terms["vit_search"] = terms["vit_search"] * float("nan")
        return terms

    monkeypatch.setattr(MOKDCriterion, "forward", poisoned)
    out = tmp_path / "run"
    status = train_main(_flags(photo_folder, out, "--ckpt_every_steps", "2", "--log_every", "3", "--tensorboard", "False"))
    assert status == 1
    err = capsys.readouterr().err
    assert "loss term vit_search is nan at step 5 (epoch 1)" in err
    assert f"{out / 'checkpoint.pth'} (step 4)" in err
    assert _load(out / "checkpoint.pth")["mokd_fast"]["step"] == 4
    assert not list(out.glob(".*tmp"))


def _bad_inputs(photo_folder: Path, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "cat" / "notes.txt").write_text("not an image")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return {
        "missing data": (["--data_path", str(tmp_path / "nowhere")], "does not exist"),
        "empty data": (["--data_path", str(empty)], "holds no images"),
        "no images": (["--data_path", str(no_images)], "holds no images"),
        "unknown flag": (["--data_path", str(photo_folder), "--lr", "0.1"], "unrecognized arguments: --lr"),
        "batch too large": (["--data_path", str(photo_folder), "--batch_size_per_gpu", "32"], "needs at least 32 images"),
        "unwritable output": (["--data_path", str(photo_folder), "--output_dir", str(blocker / "run")], "is not writable"),
    }


@pytest.mark.parametrize("case", ["missing data", "empty data", "no images", "unknown flag", "batch too large",
                                  "unwritable output"])
def test_bad_input_is_a_clear_error_with_no_checkpoint(case, photo_folder, tmp_path, capsys):
    extra, needle = _bad_inputs(photo_folder, tmp_path)[case]
    out = tmp_path / "run"
    argv = [*TINY_RUN_FLAGS, "--output_dir", str(out), *extra]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error:") and needle in err
    assert not list(tmp_path.rglob("checkpoint*.pth"))


def test_an_earlier_run_is_never_overwritten(reference_run, photo_folder, capsys):
    before = (reference_run / "checkpoint.pth").stat().st_mtime_ns
    assert train_main(_flags(photo_folder, reference_run)) == 2
    assert "already holds checkpoint.pth" in capsys.readouterr().err
    assert (reference_run / "checkpoint.pth").stat().st_mtime_ns == before


def test_resume_with_changed_settings_is_refused(reference_run, photo_folder, tmp_path, capsys):
    argv = _flags(photo_folder, tmp_path / "other", "--resume", str(reference_run / "checkpoint.pth"), "--lr_vit", "0.01")
    assert train_main(argv) == 2
    assert "lr_vit: checkpoint 0.0005 vs now 0.01" in capsys.readouterr().err


def test_a_checkpoint_from_before_the_method_registry_resumes_as_mokd(reference_run, photo_folder, tmp_path):
    """Checkpoints written before --method existed name no method in their settings: they resume as MOKD."""
    out = tmp_path / "run"
    out.mkdir()
    old = _load(reference_run / "checkpoint0000.pth")  # after epoch 0 (step 4)
    del old["mokd_fast"]["config"]["method"]
    torch.save(old, out / "old.pth")
    assert train_main(_flags(photo_folder, out, "--resume", str(out / "old.pth"), "--tensorboard", "False")) == 0
    _assert_same_training_state(_load(reference_run / "checkpoint.pth"), _load(out / "checkpoint.pth"))


def test_log_rates_leave_out_checkpoint_writes() -> None:
    """A window with a slow checkpoint write between its steps reports the steps' rate, not the write's."""
    from mokd_fast.engine.run_log import Throughput

    meter = Throughput()
    meter.window_start -= 2.0  # two steps that took 1 s each ...
    meter.stepped()
    meter.stepped()
    meter.window_start -= 10.0  # ... and a 10 s checkpoint write, reported as outside the steps
    meter.outside(10.0)
    rate, _ = meter.window(samples_per_step=4)
    assert 3.9 < rate < 4.1 and meter.run_outside == 10.0


def test_epoch_length_puts_every_schedule_on_its_own_clock_and_resumes_exactly(photo_folder, tmp_path):
    """``--epoch_length 3 --epochs 3``: 9 steps over passes of 4 batches. The lr warm-up and cosine, the
    teacher-temperature warm-up and the keepers follow epochs of 3 steps, the data stream on across
    passes, and a run stopped mid-pass and mid-epoch resumes to the uninterrupted run's state."""
    flags = ["--epochs", "3", "--epoch_length", "3", "--saveckp_freq", "2", "--tensorboard", "False",
             "--warmup_teacher_temp", "0.02", "--teacher_temp", "0.05"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train_main(_flags(photo_folder, whole, *flags)) == 0
    lines = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 10))
    assert [line["epoch"] for line in lines] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    lr = cosine_schedule(5e-4 * 4 / 256, 1e-5, 3, 3, 1)  # the official formula, 3 epochs of 3 steps
    assert [line["lr_vit"] for line in lines] == pytest.approx(lr.tolist(), rel=1e-12)
    assert [line["teacher_temp_cnn"] for line in lines] == pytest.approx([0.02] * 3 + [0.05] * 6)
    assert sorted(p.name for p in whole.glob("checkpoint*.pth")) == ["checkpoint.pth", "checkpoint0000.pth",
                                                                    "checkpoint0002.pth"]
    assert _load(whole / "checkpoint0000.pth")["mokd_fast"]["step"] == 3
    assert train_main(_flags(photo_folder, parts, *flags, "--max_steps", "5")) == 0
    assert train_main(_flags(photo_folder, parts, *flags, "--resume", str(parts / "checkpoint.pth"))) == 0
    _assert_same_training_state(_load(whole / "checkpoint.pth"), _load(parts / "checkpoint.pth"))
    resumed = [json.loads(line) for line in (parts / "log.jsonl").read_text().splitlines()]
    assert [r["loss_vit"] for r in resumed] == [line["loss_vit"] for line in lines]
    assert train_main(_flags(photo_folder, tmp_path / "other", *flags[:2], "--epoch_length", "2", "--resume",
                             str(parts / "checkpoint.pth"))) == 2
