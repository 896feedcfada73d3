"""tools/gpu_suite.py on the CPU (``--smoke``): every part runs and lands in the summary; budget and records."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import benchmark
import gpu_suite

ALL_PARTS = [p.name for p in gpu_suite.PARTS]


def _suite(*flags: str, out: Path) -> dict:
    subprocess.run([sys.executable, str(REPO / "tools" / "gpu_suite.py"), "--smoke", "--out", str(out), *flags],
                   check=True, capture_output=True, cwd=REPO)
    return json.loads((out / "summary.json").read_text())


def test_smoke_runs_every_part_and_writes_the_summary(tmp_path) -> None:
    summary = _suite("--work", str(tmp_path / "work"), out=tmp_path / "out")
    status, records = summary["status"], summary["records"]
    assert list(status) == ALL_PARTS
    assert {name: s["status"] for name, s in status.items()} == {
        **dict.fromkeys(ALL_PARTS, "ok"), "learning_mokd": "skipped"}  # a real run only: minutes of training
    assert records["env"]["dali"] == "2.4.0" and records["env"]["torchvision_decode_jpeg"] == "ok"
    assert records["dataset"]["images"] == 24 and all(c["ok"] for c in records["dataset"]["convert"].values())
    for pipeline in ("dali", "ffcv", "nvjpeg", "torchvision"):
        assert records[f"data_{pipeline}"]["samples_per_s"] > 0, pipeline
    step = records["step"]
    assert [r["variant"] for r in step["runs"]] == ["ours", "baseline"]
    assert set(step["parts"]["parts"]) == {"cnn_student_backbone", "vit_student_backbone", "cnn_teacher_backbone",
                                           "vit_teacher_backbone", "student_heads", "teacher_heads_search"}
    assert step["ours_over_bound"] > 0
    for pipeline in ("dali", "ffcv", "nvjpeg"):
        assert records[f"e2e_{pipeline}"]["pipeline"] == pipeline and records[f"e2e_{pipeline}"]["runs"][0]["samples_per_s"] > 0
    regions = {r["region"] for r in records["profile"]["profile"]["regions"]}
    assert {"cnn_student/backbone", "cnn_student/backbone [bwd]", "vit_teacher/search", "optimizer", "ema"} <= regions
    assert records["gpu_tests"]["tests"] > 0 and records["gpu_tests"]["skipped"] == records["gpu_tests"]["tests"]
    assert [r["variant"] for r in records["step_ablate"]["runs"]][:2] == ["ours", "-fused_optim"]
    assert records["step_dogo"]["method"] == "dogo" and [r["variant"] for r in records["step_dogo"]["runs"]] == [
        "ours", "baseline"]
    assert records["step_seed"]["method"] == "seed" and set(records["step_seed"]["parts"]["parts"]) == {
        "student", "teacher"} and records["step_seed"]["teacher_share_of_step"] > 0
    text = (tmp_path / "out" / "summary.md").read_text()
    for heading in ("## Machine", "## Dataset", "## Data pipelines", "## Step (synthetic batches)", "## End to end",
                    "## Profile of our step", "## GPU tests", "## Step ablation", "## DoGo step",
                    "## SEED step"):
        assert heading in text, heading
    # What the device tool brings back (at most 8 files): the summary, the table and the log only.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["suite.log", "summary.json", "summary.md"]


def test_budget_and_quick_skip_parts_and_say_why(tmp_path) -> None:
    summary = _suite("--budget_s", "0", out=tmp_path / "none")
    assert all(s["status"] == "skipped" and "--budget_s" in s["reason"] for s in summary["status"].values())
    quick = _suite("--quick", "--budget_s", "0", out=tmp_path / "quick")
    not_quick = {n for n, s in quick["status"].items() if s["reason"] == "not in --quick"}
    assert not_quick == {p.name for p in gpu_suite.PARTS if not p.in_quick} and "gpu_tests" in not_quick


def test_missing_library_skips_its_parts(tmp_path) -> None:
    suite = gpu_suite.Suite(argparse.Namespace(
        out=tmp_path / "out", smoke=True, quick=False, budget_s=10, work=tmp_path / "work", images=24, argv=[]))
    suite.records = {"env": {"dali": "missing: ModuleNotFoundError: No module named 'nvidia'", "ffcv": "1.0.2"},
                     "dataset": {"images": 24, "convert": {"dali": {"ok": True}, "ffcv": {"ok": False}}}}
    assert gpu_suite._data_source(suite, "dali").startswith("DALI missing")
    assert gpu_suite._data_source(suite, "ffcv") == "no ffcv conversion"
    assert gpu_suite._data_source(suite, "nvjpeg") == tmp_path / "work" / "data" / "dali"
    suite.log.close()


def test_step_record_is_saved_after_every_variant(tmp_path, monkeypatch) -> None:
    """A run killed mid-way (budget, crash) leaves the variants it finished in its JSON."""
    import mokd_fast.bench.timing as step_bench

    calls = []

    def fake_bench_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return {"samples_per_s": 10.0, "step_ms_median": 1.0, "step_ms_p90": 1.0, "data_wait": 0.0,
                "peak_memory_gib": None}

    monkeypatch.setattr(step_bench, "bench_step", fake_bench_step)
    out = tmp_path / "step.json"
    with pytest.raises(RuntimeError, match="killed"):
        benchmark.main(["--mode", "step", "--device", "cpu", "--baseline", "--json", str(out)])
    record = json.loads(out.read_text())
    assert [r["variant"] for r in record["runs"]] == ["ours"] and record["mode"] == "step"
    assert "| ours | 10.0 |" in benchmark.step_table(record)  # a cut record (no MFU yet) still prints


def test_junit_summary_counts_and_names_failures(tmp_path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="2.5">'
                   '<testcase classname="tests.test_gpu" name="test_a"/>'
                   '<testcase classname="tests.test_gpu" name="test_b"><failure message="boom&#10;more"/></testcase>'
                   '<testcase classname="tests.test_gpu" name="test_c"><skipped/></testcase>'
                   '</testsuite></testsuites>')
    summary = gpu_suite.junit_summary(xml)
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (1, 1, 1)
    assert summary["failing"] == [{"test": "tests.test_gpu::test_b", "kind": "failure", "message": "boom"}]
    assert gpu_suite.junit_summary(tmp_path / "absent.xml") is None


def _learning_markdown(record_name: str, status: str) -> str:
    """The suite summary's markdown with one recorded learning proof (docs/benchmarks/<record_name>) as its part."""
    record = json.loads((REPO / "docs" / "benchmarks" / record_name).read_text())
    return gpu_suite.markdown({"suite": {"date": "d", "command": "c", "elapsed_s": 1, "budget_s": 2, "quick": False,
                                         "smoke": False},
                               "status": {"learning_mokd": {"status": status, "seconds": 3}},
                               "records": {"learning_mokd": record}})


def test_the_learning_proofs_record_becomes_a_table() -> None:
    text = _learning_markdown("learning-cpu-mokd-2026-11-30.json", "ok")
    assert "## Learning proof (MOKD on the shapes data)" in text and "learned: False" in text
    assert "| cnn | 15.50 | 13.17 | -2.33 |" in text


def test_a_proof_stopped_at_a_gate_names_the_gate() -> None:
    text = _learning_markdown("learning-cpu-mokd-gates-2026-12-05.json", "failed")
    assert "Stopped before pre-training:\n\n- gate 2: supervised vit reached 15.2% held-out top-1" in text
    assert "supervised cnn" not in text  # a passed gate is not listed


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "real_run"])
def test_only_a_real_run_cuts_a_part_on_the_clock(tmp_path, smoke) -> None:
    """A part outlasting the budget (a busy 2-core machine) is cut and failed on a GPU run, never under --smoke."""
    suite = gpu_suite.Suite(argparse.Namespace(
        out=tmp_path / "out", smoke=smoke, quick=False, budget_s=1.5, work=tmp_path / "work", images=24, argv=[]))
    part = gpu_suite.Part("slow", (0.0, 0.0), True, lambda s, z: [])
    suite._run(part, [sys.executable, "-c", "import time; time.sleep(3)"])
    suite.log.close()
    assert suite.status["slow"]["status"] == ("ok" if smoke else "cut by budget")


def test_a_smoke_run_has_no_budget_unless_given() -> None:
    text = gpu_suite.markdown({"suite": {"date": "d", "command": "c", "elapsed_s": 1, "budget_s": None, "quick": False,
                                         "smoke": True}, "status": {}, "records": {}})
    assert "1 s of no budget (smoke" in text
