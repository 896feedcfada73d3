"""Collapse monitors on constructed collapsed, uniform and healthy outputs; the warning fires once, sustained."""

import math

import pytest
import torch
import torch.nn.functional as F

from mokd_fast.engine.collapse import CollapseWatch
from mokd_fast.methods.common.monitors import distribution_monitors, embedding_spread

N, K, D = 64, 128, 32


def test_one_prototype_for_every_image() -> None:
    logits = torch.full((N, K), -20.0)
    logits[:, 7] = 20.0
    m = distribution_monitors(logits.softmax(dim=1))
    assert m["mean_entropy"].item() == pytest.approx(0.0, abs=1e-3)
    assert m["sample_entropy"].item() == pytest.approx(0.0, abs=1e-3)
    assert m["distinct"].item() == pytest.approx(1 / N)


def test_uniform_outputs() -> None:
    m = distribution_monitors(torch.full((N, K), 1.0 / K))
    assert m["sample_entropy"].item() == pytest.approx(math.log(K), rel=1e-5)
    assert m["mean_entropy"].item() == pytest.approx(math.log(K), rel=1e-5)
    assert m["distinct"].item() == pytest.approx(1 / N)  # every argmax ties on prototype 0


def test_healthy_outputs_are_confident_and_spread() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(N, K, generator=gen)
    logits[torch.arange(N), torch.arange(N)] += 12.0  # each image confident on its own prototype
    m = distribution_monitors(logits.softmax(dim=1))
    assert m["distinct"].item() == pytest.approx(1.0)
    assert m["sample_entropy"].item() < 0.2 * math.log(K)
    assert m["mean_entropy"].item() > 0.8 * math.log(N)


def test_embedding_spread_is_one_when_spread_and_zero_when_collapsed() -> None:
    gen = torch.Generator().manual_seed(1)
    spread = embedding_spread(torch.randn(4096, D, generator=gen)).item()
    assert spread == pytest.approx(1.0, abs=0.03)
    one_way = torch.randn(1, D, generator=gen).expand(N, D) + 1e-6 * torch.randn(N, D, generator=gen)
    assert embedding_spread(one_way).item() < 1e-3
    assert F.normalize(one_way, dim=1).shape == (N, D)


def test_the_warning_fires_once_after_a_sustained_window() -> None:
    watch = CollapseWatch(window=3, log_k={"teacher_cnn": math.log(K)})
    healthy = {"teacher_cnn_mean_entropy": 4.0, "teacher_cnn_sample_entropy": 0.5, "teacher_cnn_distinct": 0.9,
               "teacher_cnn_spread": 0.8}
    collapsed = {**healthy, "teacher_cnn_sample_entropy": 0.999 * math.log(K)}
    assert watch.update(10, collapsed) is None and watch.update(20, collapsed) is None
    assert watch.update(30, healthy) is None  # the run is broken: the count starts again
    assert watch.update(40, collapsed) is None and watch.update(50, collapsed) is None
    line = watch.update(60, collapsed)
    assert line is not None and "step 60" in line and "teacher_cnn: uniform outputs" in line
    assert watch.update(70, collapsed) is None  # once


def test_one_prototype_and_one_way_embeddings_are_named() -> None:
    watch = CollapseWatch(window=1)
    reasons = watch.reasons({"a_mean_entropy": 0.01, "a_sample_entropy": 0.0, "a_distinct": 0.016,
                             "b_spread": 0.001, "c_spread": 0.006})
    assert reasons["a"].startswith("one prototype") and reasons["b"].startswith("embeddings point one way")
    assert "c" not in reasons


def test_the_warning_ends_with_the_advice_of_each_kind_it_names_once() -> None:
    advice = {"uniform": "ADVICE-U.", "prototype": "ADVICE-P.", "spread": "ADVICE-S."}
    watch = CollapseWatch(window=1, log_k={"a": math.log(K), "b": math.log(K)}, advice=advice)
    uniform = {"_sample_entropy": 0.999 * math.log(K), "_mean_entropy": 4.0, "_distinct": 0.9}
    line = watch.update(5, {f"{g}{k}": v for g in ("a", "b") for k, v in uniform.items()})
    assert line is not None and line.count("ADVICE-U.") == 1
    assert "ADVICE-P." not in line and "ADVICE-S." not in line
    assert line.index("b: uniform outputs") < line.index("ADVICE-U.") < line.index("docs/learning-health.md")
    assert "ADVICE-S." in CollapseWatch(window=1, advice=advice).update(1, {"c_spread": 0.0})


def test_a_collapsed_run_warns_and_stops_with_a_checkpoint(photo_folder, tmp_path, capsys) -> None:
    """A teacher at temperature 100 gives near-uniform targets: the uniform collapse, from the first log line."""
    import json

    from mokd_fast.cli import main as train_main
    from tests.conftest import TINY_RUN_FLAGS

    out = tmp_path / "run"
    flags = [*TINY_RUN_FLAGS, "--data_path", str(photo_folder), "--output_dir", str(out), "--tensorboard", "False",
             "--warmup_teacher_temp", "100", "--teacher_temp", "100", "--collapse_window", "2",
             "--stop_on_collapse", "True"]
    assert train_main(flags) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "WARNING: collapse at step 2" in text and "teacher_cnn: uniform outputs" in text
    warning = next(line for line in text.splitlines() if "WARNING: collapse" in line)
    assert "--use_bn_in_head true" in warning and "--lr_cnn" not in warning  # MOKD's advice for the uniform kind only
    assert "stopping at step 2 (--stop_on_collapse)" in text
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert lines[-1]["teacher_cnn_sample_entropy"] > 0.98 * math.log(256)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["collapse_warning"].startswith("WARNING: collapse at step 2")
    assert torch.load(out / "checkpoint.pth")["mokd_fast"]["step"] == 2
