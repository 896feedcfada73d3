"""tools/benchmark.py: the image generator is the same in parallel, and the k-NN mode reports what it ran."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import benchmark


def _digests(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest() for f in sorted(root.rglob("*.jpg"))}


def test_imagenet_like_folder_same_images_with_workers(tmp_path) -> None:
    one = _digests(benchmark.imagenet_like_folder(tmp_path / "one", 12))
    two = _digests(benchmark.imagenet_like_folder(tmp_path / "two", 12, workers=2))
    assert len(one) == 12 and one == two


def test_knn_mode_runs_eval_knn_and_writes_the_record(tmp_path) -> None:
    out = tmp_path / "knn.json"
    subprocess.run([sys.executable, str(REPO / "tools/benchmark.py"), "--mode", "knn", "--images", "30", "--arch",
                    "resnet18", "--batch_size_per_gpu", "8", "--num_workers", "1", "--steps", "2", "--warmup", "1",
                    "--precisions", "fp32", "--device", "cpu", "--json", str(out)], check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert (record["mode"], record["arch"], record["train_images"], record["val_images"]) == ("knn", "resnet18", 27, 3)
    (run,) = record["runs"]
    assert run["precision"] == "fp32" and run["features_per_s"] > 0 and run["backbone_features_per_s"] > 0
    assert 0 <= run["top1_k20"] <= 100


def test_step_mode_times_dogo_beside_its_official_execution(tmp_path) -> None:
    out = tmp_path / "dogo.json"
    cmd = [sys.executable, str(REPO / "tools/benchmark.py"), "--mode", "step", "--method", "dogo", "--global_size", "16",
           "--batch_size_per_gpu", "4", "--steps", "1", "--warmup", "1", "--baseline", "--device", "cpu", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert (record["method"], record["arch_1"], record["views"]) == ("dogo", "resnet18", "4x16")
    ours, baseline = record["runs"]
    assert (ours["variant"], baseline["variant"]) == ("ours", "baseline")
    assert ours["switches"]["fused_optim"] and not baseline["switches"]["fused_optim"]
    assert ours["samples_per_s"] > 0 and baseline["samples_per_s"] > 0 and record["flops_per_sample"] > 0
    parts = subprocess.run([*cmd[:-2], "--parts"], capture_output=True, text=True)
    assert parts.returncode == 2 and "--method dogo has no breakdown into parts" in parts.stderr


def test_step_mode_times_seed_with_its_parts_and_the_teachers_share(tmp_path) -> None:
    out = tmp_path / "seed.json"
    cmd = [sys.executable, str(REPO / "tools/benchmark.py"), "--mode", "step", "--method", "seed", "--teacher_arch",
           "resnet18", "--student_arch", "resnet18", "--global_size", "32", "--patches", "2", "--local_size", "16",
           "--batch_size_per_gpu", "4", "--steps", "1", "--warmup", "1", "--baseline", "--parts", "--device", "cpu",
           "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert (record["method"], record["student_arch"], record["views"]) == ("seed", "resnet18", "1x32 + 2x16")
    assert [r["variant"] for r in record["runs"]] == ["ours", "baseline"]
    assert set(record["parts"]["parts"]) == {"student", "teacher"} and record["ours_over_bound"] > 0
    assert record["teacher_share_of_step"] > 0  # a ratio of times: no bound that load on the machine could break


def test_step_mode_times_mcl_beside_its_official_execution(tmp_path) -> None:
    out = tmp_path / "mcl.json"
    cmd = [sys.executable, str(REPO / "tools/benchmark.py"), "--mode", "step", "--method", "mcl", "--global_size", "32",
           "--batch_size_per_gpu", "4", "--steps", "1", "--warmup", "1", "--baseline", "--device", "cpu", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert (record["method"], record["archs"], record["views"]) == ("mcl", ["resnet18", "resnet18"], "2x32")
    ours, baseline = record["runs"]
    assert ours["switches"]["fused_optim"] and not baseline["switches"]["fused_optim"]
    assert ours["samples_per_s"] > 0 and baseline["samples_per_s"] > 0


def test_step_mode_times_lmcl_with_its_memory_banks(tmp_path) -> None:
    out = tmp_path / "lmcl.json"
    cmd = [sys.executable, str(REPO / "tools/benchmark.py"), "--mode", "step", "--method", "lmcl", "--global_size", "32",
           "--classes", "10", "--train_images", "64", "--batch_size_per_gpu", "4", "--steps", "1", "--warmup", "1",
           "--baseline", "--device", "cpu", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert (record["method"], record["num_classes"], record["train_images"], record["views"]) == ("lmcl", 10, 64, "1x32")
    assert [r["variant"] for r in record["runs"]] == ["ours", "baseline"] and record["runs"][0]["samples_per_s"] > 0
