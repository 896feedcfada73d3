"""Files from elsewhere are data: every command reads checkpoints without running code from them.

Over every command that reads a checkpoint-like file: a pickle carrying code (three layouts) is
refused and its code does not run; broken files (empty, random, text, cut short, a folder, another
method's or architecture's file) give one line naming the flag and the file, exit 2, no traceback;
and the legitimate files still load: an official MOKD checkpoint with its ``args``, MoCo v2 and
SwAV teachers, a timm ``.safetensors``, and every method's checkpoint in the format written before
2026-12-04 (NumPy learning rates and RNG state), which resumes bit for bit like the new format.
"""

import argparse
import copy
import datetime
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from mokd_fast import MOKD
from mokd_fast.cli import main as train_main
from mokd_fast.core.checkpoint_io import load_file, pickle_globals
from mokd_fast.core.errors import UsageError
from mokd_fast.eval.cli import classifiers_main, export_main, knn_main, linear_main
from mokd_fast.methods.mokd.official import export_official, load_official
from mokd_fast.methods.seed.config import SEEDConfig
from mokd_fast.methods.seed.swav_resnet import swav_resnet50
from mokd_fast.methods.seed.teacher_load import load_teacher
from tests.conftest import method_flags, small_config

REPO = Path(__file__).resolve().parents[1]
EVAL = ["--input_size", "32", "--batch_size_per_gpu", "8", "--num_workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> dict[str, Path]:
    """A timm ResNet-18 without classifier, as ``.safetensors`` and as a plain ``.pth`` state dict."""
    root = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    save_file(state, str(root / "resnet18.safetensors"))
    torch.save(state, root / "resnet18.pth")
    return {"safetensors": root / "resnet18.safetensors", "pth": root / "resnet18.pth"}


# ---- the three commands' inputs: a fresh checkpoint of every method holds plain data ----

@pytest.mark.parametrize("method", ["mokd", "dogo", "seed", "mcl", "lmcl"])
def test_a_fresh_checkpoint_pickles_nothing_but_torch_and_ordered_dicts(method_runs, method) -> None:
    found = pickle_globals(method_runs[method])
    assert "collections.OrderedDict" in found and "torch._utils._rebuild_tensor_v2" in found  # the scan sees them
    foreign = sorted(g for g in found if not g.startswith("torch.") and g != "collections.OrderedDict")
    assert not foreign, f"{method}'s checkpoint pickles {foreign}"
    ckpt = torch.load(method_runs[method])  # torch's own safe default opens it
    assert ckpt["mokd_fast"]["step"] == 1


# ---- code carried in a pickle is refused in every command, and does not run ----

class _RunsCode:
    """Pickles as a call of ``os.system``: loading it with the full unpickler runs the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _code_carrying(path: Path, layout: str, marker: Path) -> Path:
    weights = {"conv1.weight": torch.zeros(64, 3, 7, 7)}
    obj = {
        "plain": {**weights, "payload": _RunsCode(marker)},
        "moco": {"arch": "resnet18", "state_dict": {f"module.encoder_q.{k}": v for k, v in weights.items()},
                 "extra": _RunsCode(marker)},
        "ours": {"teacher_cnn": {f"backbone.{k}": v for k, v in weights.items()}, "arch_cnn": "resnet18", "epoch": 1,
                 "mokd_fast": {"step": 1, "rng": [_RunsCode(marker)]}},
    }[layout]
    torch.save(obj, path)
    return path


@dataclass(frozen=True)
class Command:
    """One way a file reaches the project: the flag that names it and how the command is run."""

    name: str
    flag: str
    run: Callable[[Path, dict[str, Path]], int]


def _train(args: list[str]) -> Callable[[Path, dict[str, Path]], int]:
    """train.py with a file as ``--resume`` (args empty) or as SEED's ``--teacher``."""
    def run(file: Path, env: dict[str, Path]) -> int:
        if args:
            flags = method_flags("seed", env["photos"], file)
        else:
            flags = [*method_flags("mokd", env["photos"], file), "--resume", str(file)]
        return train_main([*flags, "--output_dir", str(env["tmp"] / "run")])
    return run


def _features(file: Path, env: dict[str, Path]) -> int:
    folder = env["tmp"] / "features"
    folder.mkdir(exist_ok=True)
    for name in ("trainfeat.pth", "testfeat.pth", "trainlabels.pth", "testlabels.pth"):
        if file.is_dir():
            (folder / name).mkdir(exist_ok=True)
        else:
            shutil.copy(file, folder / name)
    return knn_main(["--load_features", str(folder), "--data_path", str(env["labelled"]), "--output_dir",
                     str(env["tmp"] / "knn"), *EVAL])


COMMANDS = [
    Command("train --resume", "--resume", _train([])),
    Command("train --method seed --teacher", "--teacher", _train(["seed"])),
    Command("eval_knn --pretrained_weights", "--pretrained_weights",
            lambda f, env: knn_main(["--pretrained_weights", str(f), "--data_path", str(env["labelled"]),
                                     "--output_dir", str(env["tmp"] / "knn"), *EVAL])),
    Command("eval_knn --load_features", "--load_features", _features),
    Command("eval_linear --pretrained_weights", "--pretrained_weights",
            lambda f, env: linear_main(["--pretrained_weights", str(f), "--data_path", str(env["labelled"]),
                                        "--output_dir", str(env["tmp"] / "lin"), "--epochs", "1", *EVAL])),
    Command("eval_linear --evaluate", "--evaluate",
            lambda f, env: linear_main(["--arch", "resnet18", "--evaluate", str(f), "--data_path",
                                        str(env["labelled"]), "--output_dir", str(env["tmp"] / "lin"), *EVAL])),
    Command("export", "checkpoint", lambda f, env: export_main([str(f), str(env["tmp"] / "export.pth")])),
    Command("eval_classifiers", "--checkpoint",
            lambda f, env: classifiers_main(["--checkpoint", str(f), "--data_path", str(env["labelled"] / "val"),
                                             "--output_dir", str(env["tmp"] / "cls"), "--device", "cpu"])),
]


@pytest.fixture
def env(photo_folder, labelled_folder, tmp_path) -> dict[str, Path]:
    return {"photos": photo_folder, "labelled": labelled_folder, "tmp": tmp_path}


def _named_file(command: Command, file: Path, env: dict[str, Path]) -> Path:
    return env["tmp"] / "features" / "trainfeat.pth" if command.flag == "--load_features" else file


def _assert_one_line_error(command: Command, status: int, err: str, file: Path) -> str:
    """Exit 2, no traceback, and exactly one error line that names the flag and the file; returns that line."""
    assert status == 2, f"{command.name}: exit {status}\n{err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, f"{command.name}: {err}"
    assert command.flag in lines[0] and str(file) in lines[0], f"{command.name}: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("layout", ["plain", "moco", "ours"])
@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_a_pickle_that_carries_code_is_refused_and_its_code_does_not_run(command, layout, env, capsys) -> None:
    marker = env["tmp"] / "code_ran"
    file = _code_carrying(env["tmp"] / f"{layout}.pth", layout, marker)
    status = command.run(file, env)
    line = _assert_one_line_error(command, status, capsys.readouterr().err, _named_file(command, file, env))
    assert f"{os.system.__module__}.system" in line and "--trust_checkpoint" in line
    assert not marker.exists(), f"{command.name} ran the code in a {layout} checkpoint"


def _broken(kind: str, tmp: Path, method_runs: dict[str, Path]) -> Path:
    path = tmp / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    elif kind == "text":
        path.write_text("epoch,loss\n0,4.2\n")
    elif kind == "truncated":
        data = method_runs["mokd"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "directory":
        path.mkdir()
    return path


BROKEN = {"empty": "is empty", "random": "not a file this project reads", "text": "is a text file",
          "truncated": "is incomplete", "directory": "is a directory"}


@pytest.mark.parametrize("kind", list(BROKEN))
@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_a_broken_file_is_one_line_naming_the_flag_and_the_file(command, kind, env, method_runs, capsys) -> None:
    file = _broken(kind, env["tmp"], method_runs)
    status = command.run(file, env)
    named = _named_file(command, file, env)
    line = _assert_one_line_error(command, status, capsys.readouterr().err, named)
    assert BROKEN[kind] in line


def _lmcl_with_arch(method_runs: dict[str, Path], tmp: Path, arch: str) -> Path:
    ckpt = torch.load(method_runs["lmcl"])
    ckpt["arch_1"] = arch
    torch.save(ckpt, tmp / "lmcl_other_arch.pth")
    return tmp / "lmcl_other_arch.pth"


def _probe(tmp: Path, width: int) -> Path:
    torch.save({"state_dict": nn.Linear(width, 4).state_dict(), "epoch": 1}, tmp / "probe.pth")
    return tmp / "probe.pth"


def _features_of_two_widths(tmp: Path) -> Path:
    folder = tmp / "features"
    folder.mkdir()
    for name, value in (("trainfeat.pth", torch.randn(16, 8)), ("testfeat.pth", torch.randn(8, 6)),
                        ("trainlabels.pth", torch.zeros(16, dtype=torch.long)),
                        ("testlabels.pth", torch.zeros(8, dtype=torch.long))):
        torch.save(value, folder / name)
    return folder / "trainfeat.pth"


# (command, a file of another method or kind, extra flags, what the line says)
OTHER_METHOD = {
    "train --resume": ("dogo", [], "is a checkpoint of --method dogo, this run is --method mokd"),
    "train --method seed --teacher": ("lmcl", ["--teacher_key", "teacher_cnn"], "no state dict under --teacher_key"),
    "eval_knn --pretrained_weights": ("dogo", [], "no state dict under --checkpoint_key 'teacher_cnn'"),
    "eval_knn --load_features": ("mokd", [], "not a tensor"),
    "eval_linear --pretrained_weights": ("dogo", [], "no state dict under --checkpoint_key 'teacher_cnn'"),
    "eval_linear --evaluate": ("mokd", [], "not a linear probe"),
    "export": ("dogo", [], "no state dict under --key 'teacher_cnn'"),
    "eval_classifiers": ("mokd", [], "is not an L-MCL checkpoint"),
}


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_a_checkpoint_of_another_method_is_one_line(command, env, method_runs, capsys) -> None:
    method, extra, says = OTHER_METHOD[command.name]
    file = method_runs[method]
    if extra:  # only the teacher command takes extra flags
        status = train_main([*method_flags("seed", env["photos"], file), *extra, "--output_dir", str(env["tmp"] / "r")])
    else:
        status = command.run(file, env)
    line = _assert_one_line_error(command, status, capsys.readouterr().err, _named_file(command, file, env))
    assert says in line


def test_a_checkpoint_of_another_architecture_is_one_line(env, method_runs, resnet18_weights, photo_folder, labelled_folder,
                                                           capsys) -> None:
    tmp = env["tmp"]
    cases = [
        ("--resume", method_runs["mokd"], "settings differ",
         lambda: train_main([*method_flags("mokd", photo_folder, method_runs["moco"]), "--arch_cnn", "resnet34",
                             "--resume", str(method_runs["mokd"]), "--output_dir", str(tmp / "r")])),
        ("--teacher", resnet18_weights["safetensors"], "does not fit 'resnet34'",
         lambda: train_main([*method_flags("seed", photo_folder, resnet18_weights["safetensors"]),
                             "--teacher_arch", "resnet34", "--output_dir", str(tmp / "s")])),
        ("--pretrained_weights", resnet18_weights["pth"], "does not fit 'resnet34'",
         lambda: knn_main(["--pretrained_weights", str(resnet18_weights["pth"]), "--arch", "resnet34", "--data_path",
                           str(labelled_folder), "--output_dir", str(tmp / "k"), *EVAL])),
        ("--pretrained_weights", method_runs["mokd"], "was trained as 'resnet18' but --arch is 'resnet50'",
         lambda: linear_main(["--pretrained_weights", str(method_runs["mokd"]), "--arch", "resnet50", "--data_path",
                              str(labelled_folder), "--output_dir", str(tmp / "l"), *EVAL])),
        ("--evaluate", _probe(tmp, 384), "a probe of another shape",
         lambda: linear_main(["--arch", "resnet18", "--evaluate", str(tmp / "probe.pth"), "--data_path",
                              str(labelled_folder), "--output_dir", str(tmp / "l"), *EVAL])),
        ("checkpoint", resnet18_weights["safetensors"], "does not fit 'resnet34'",
         lambda: export_main([str(resnet18_weights["safetensors"]), str(tmp / "e.pth"), "--arch", "resnet34"])),
        ("--checkpoint", _lmcl_with_arch(method_runs, tmp, "resnet34"), "do not fit the architectures it records",
         lambda: classifiers_main(["--checkpoint", str(tmp / "lmcl_other_arch.pth"), "--data_path",
                                   str(labelled_folder / "val"), "--device", "cpu"])),
        ("--load_features", _features_of_two_widths(tmp), "do not belong together",
         lambda: knn_main(["--load_features", str(tmp / "features"), "--data_path", str(labelled_folder),
                           "--output_dir", str(tmp / "k"), *EVAL])),
    ]
    for flag, file, says, run in cases:
        status = run()
        named = file.parent if flag == "--load_features" else file
        line = _assert_one_line_error(Command(flag, flag, run), status, capsys.readouterr().err, named)
        assert says in line, line


def test_a_cut_short_resume_names_the_complete_checkpoint_beside_it_and_writes_nothing(method_runs, photo_folder,
                                                                                        tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(method_runs["mokd"], run / "checkpoint0000.pth")
    data = method_runs["mokd"].read_bytes()
    (run / "checkpoint.pth").write_bytes(data[: len(data) - 1000])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    status = train_main([*method_flags("mokd", photo_folder, method_runs["moco"]), "--output_dir", str(run),
                         "--resume", str(run / "checkpoint.pth")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "is incomplete" in err and f"the newest complete checkpoint beside it is {run / 'checkpoint0000.pth'}" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_the_command_line_prints_the_refusal_without_a_traceback(tmp_path) -> None:
    marker = tmp_path / "code_ran"
    file = _code_carrying(tmp_path / "teacher.pth", "plain", marker)
    done = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), str(file), str(tmp_path / "o.pth")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"export: error: checkpoint {file}: refused without loading it")
    assert not marker.exists() and not (tmp_path / "o.pth").exists()


# ---- what users trust on purpose ----

def test_trust_checkpoint_reads_a_file_with_foreign_types(method_runs, tmp_path, capsys) -> None:
    ckpt = torch.load(method_runs["mokd"])
    torch.save({"teacher_cnn": ckpt["teacher_cnn"], "arch_cnn": "resnet18", "saved_on": datetime.date(2026, 12, 4)},
               tmp_path / "dated.pth")
    assert export_main([str(tmp_path / "dated.pth"), str(tmp_path / "a.pth")]) == 2
    assert "asks for datetime.date" in capsys.readouterr().err
    assert export_main([str(tmp_path / "dated.pth"), str(tmp_path / "a.pth"), "--trust_checkpoint"]) == 0
    with pytest.raises(UsageError, match="datetime.date"):
        load_file(tmp_path / "dated.pth", "--x")
    assert load_file(tmp_path / "dated.pth", "--x", trust=True)["saved_on"] == datetime.date(2026, 12, 4)


# ---- legitimate files from elsewhere still load ----

def test_an_official_mokd_checkpoint_with_its_args_loads(tmp_path) -> None:
    torch.manual_seed(0)
    source = MOKD(small_config())
    opt = torch.optim.SGD(source.students.cnn.parameters(), lr=0.1, momentum=0.9)
    opt.param_groups[0]["lr"] = np.float64(0.0375)  # the official code writes its schedule's NumPy values
    args = argparse.Namespace(arch_cnn="resnet18", arch_vit="vit_tiny", out_dim=256, lr=0.0005, use_fp16=True,
                              data_path="/path/to/imagenet/train", local_crops_scale=(0.05, 0.25))
    torch.save(export_official(source, epoch=3, args=args, optimizer_cnn=opt.state_dict()), tmp_path / "mokd.pth")
    torch.manual_seed(1)
    target = MOKD(small_config())
    rest = load_official(target, tmp_path / "mokd.pth")
    assert rest["args"].data_path == "/path/to/imagenet/train" and rest["epoch"] == 3
    assert rest["optimizer_cnn"]["param_groups"][0]["lr"] == 0.0375
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)
    assert export_main([str(tmp_path / "mokd.pth"), str(tmp_path / "r18.pth"), "--key", "teacher_cnn"]) == 0


def test_moco_v2_and_swav_teachers_load(method_runs, tmp_path) -> None:
    moco = load_teacher(SEEDConfig(teacher=str(method_runs["moco"])))
    assert moco.dim == 128 and "MoCo resnet18" in moco.source
    torch.manual_seed(0)
    swav = swav_resnet50(1)
    state = {f"module.{k}": v for k, v in swav.state_dict().items()}
    state |= {"module.projection_head.0.weight": torch.randn(2048, 2048), "module.projection_head.0.bias": torch.zeros(2048),
              "module.projection_head.1.weight": torch.ones(2048), "module.projection_head.1.bias": torch.zeros(2048),
              "module.projection_head.1.running_mean": torch.zeros(2048),
              "module.projection_head.1.running_var": torch.ones(2048),
              "module.projection_head.1.num_batches_tracked": torch.tensor(0),
              "module.projection_head.3.weight": torch.randn(128, 2048), "module.projection_head.3.bias": torch.zeros(128),
              "module.prototypes.weight": torch.randn(3000, 128)}
    torch.save(state, tmp_path / "swav_800ep_pretrain.pth.tar")
    teacher = load_teacher(SEEDConfig(teacher=str(tmp_path / "swav_800ep_pretrain.pth.tar")))
    assert teacher.dim == 128 and "SwAV resnet50" in teacher.source


def test_a_timm_safetensors_file_is_read_wherever_weights_are(resnet18_weights, labelled_folder, tmp_path) -> None:
    file = resnet18_weights["safetensors"]
    assert knn_main(["--pretrained_weights", str(file), "--arch", "resnet18", "--data_path", str(labelled_folder),
                     "--output_dir", str(tmp_path / "knn"), "--nb_knn", "5", *EVAL]) == 0
    teacher = load_teacher(SEEDConfig(teacher=str(file), teacher_arch="resnet18", teacher_format="timm"))
    reference = timm.create_model("resnet18", num_classes=0)
    reference.load_state_dict(load_file(resnet18_weights["pth"], "--x"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher.backbone(x), reference.eval()(x))
    assert export_main([str(file), str(tmp_path / "r18.safetensors"), "--arch", "resnet18"]) == 0


def _old_format(ckpt: dict) -> dict:
    """``ckpt`` as this project wrote it before 2026-12-04: NumPy learning rates and NumPy RNG key arrays."""
    old = copy.deepcopy(ckpt)
    for key, value in old.items():
        if key.startswith("optimizer_"):
            for group in value["param_groups"]:
                group["lr"] = np.float64(group["lr"])
                if "weight_decay" in group:
                    group["weight_decay"] = np.float64(group["weight_decay"])
    for rank in old["mokd_fast"]["rng"]:
        kind, keys, *rest = rank["numpy"]
        rank["numpy"] = (kind, np.asarray(keys, dtype=np.uint32), *rest)
    return old


def _assert_same(a, b, where: str = "") -> None:
    assert type(a) is type(b) or (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list))), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("method", ["mokd", "dogo", "seed", "mcl", "lmcl"])
def test_an_old_format_checkpoint_loads_and_resumes_bit_for_bit(method, method_runs, photo_folder, tmp_path) -> None:
    new = torch.load(method_runs[method])
    old = _old_format(new)
    for name, ckpt in (("new", new), ("old", old)):
        (tmp_path / name).mkdir()
        torch.save(ckpt, tmp_path / name / "checkpoint.pth")
    assert any(g.startswith("numpy") for g in pickle_globals(tmp_path / "old" / "checkpoint.pth"))
    loaded = load_file(tmp_path / "old" / "checkpoint.pth", "--resume")
    _assert_same({k: v for k, v in loaded.items() if k != "mokd_fast"}, {k: v for k, v in old.items() if k != "mokd_fast"})
    assert all(np.array_equal(a["numpy"][1], b["numpy"][1]) for a, b in zip(loaded["mokd_fast"]["rng"], old["mokd_fast"]["rng"]))
    for name in ("new", "old"):
        assert train_main([*method_flags(method, photo_folder, method_runs["moco"]), "--output_dir", str(tmp_path / name),
                           "--resume", str(tmp_path / name / "checkpoint.pth"), "--max_steps", "2"]) == 0
    a, b = (torch.load(tmp_path / name / "checkpoint.pth") for name in ("new", "old"))
    assert a["mokd_fast"]["step"] == 2
    for ckpt in (a, b):
        ckpt["mokd_fast"].pop("config")  # holds the output folders, which differ
    _assert_same(a, b)


def test_numpy_1_names_and_torch_legacy_format_load(tmp_path) -> None:
    """A checkpoint pickled under NumPy 1 names numpy.core.multiarray; torch's pre-1.6 format is a pickle stream."""
    torch.save({"lr": np.float64(0.1), "key": np.arange(4, dtype=np.uint32), "w": torch.ones(2)}, tmp_path / "a.pth",
               _use_new_zipfile_serialization=False)
    data = (tmp_path / "a.pth").read_bytes()
    assert b"numpy._core.multiarray" in data
    (tmp_path / "b.pth").write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert "numpy.core.multiarray.scalar" in pickle_globals(tmp_path / "b.pth")
    loaded = load_file(tmp_path / "b.pth", "--x")
    assert loaded["lr"] == 0.1 and loaded["key"].tolist() == [0, 1, 2, 3] and torch.equal(loaded["w"], torch.ones(2))


def test_a_stack_global_pickle_is_scanned_and_refused(tmp_path) -> None:
    """Protocol 4+ pickles name callables with STACK_GLOBAL; the static scan finds those too."""
    marker = tmp_path / "code_ran"
    (tmp_path / "p4.pth").write_bytes(pickle.dumps({"x": _RunsCode(marker)}, protocol=4))
    with pytest.raises(UsageError, match=rf"asks for {os.system.__module__}\.system"):
        load_file(tmp_path / "p4.pth", "--pretrained_weights")
    assert not marker.exists()
