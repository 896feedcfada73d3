"""Contracts over the registries (parametrised from them, so a new backend or method is covered when registered)."""

import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder

from mokd_fast.bench.timing import synthetic_batches, synthetic_labels
from mokd_fast.cli import build_parser, parse_config
from mokd_fast.core.checkpoint_io import atomic_save
from mokd_fast.core.distributed import DistContext
from mokd_fast.core.run_config import RunConfig
from mokd_fast.engine.checkpoint import (
    build_checkpoint,
    capture_rng,
    check_settings,
    load_checkpoint,
    read_checkpoint,
)
from mokd_fast.engine.step import TrainStep
from mokd_fast.engine.trainer import run_settings
from mokd_fast.methods import METHODS
from mokd_fast.methods.base import Method
from pipelines import BACKENDS, PIPELINES
from pipelines.errors import UsageError
from pipelines.policy import MultiCropPolicy, ViewPolicy

REPO = Path(__file__).resolve().parents[1]
POLICY = MultiCropPolicy.mokd(32, 16, (0.25, 1.0), (0.05, 0.25), 2)


def _data(converted_folders, backend: str) -> Path:
    root = converted_folders[BACKENDS[backend][2]] / "train"
    return root / "train.beton" if BACKENDS[backend][2] == "ffcv" else root


@pytest.mark.parametrize("backend", list(PIPELINES))
def test_every_pipeline_keeps_the_batch_contract(backend, converted_folders) -> None:
    pipe = PIPELINES[backend](_data(converted_folders, backend), POLICY, 4, 1, 0, 7, 1, torch.device("cpu"),
                              channels_last=True)
    batches = list(pipe.epoch(0))
    assert len(batches) == len(pipe) == 4  # 16 images, batch 4
    labels = []
    for batch in batches:
        assert batch.global_crops.shape == (8, 3, 32, 32) and batch.local_crops.shape == (8, 3, 16, 16)
        assert batch.global_crops.dtype == batch.local_crops.dtype == torch.float32
        assert batch.global_crops.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(batch.global_crops).all() and batch.labels.dtype == torch.int64
        labels += batch.labels.tolist()
    assert sorted(set(labels)) == [0, 1, 2, 3]  # labels survive the conversion: 4 classes x 4 images
    # The whole epoch again (an FFCV epoch left half-read keeps its loader threads busy into the next test).
    again = list(PIPELINES[backend](_data(converted_folders, backend), POLICY, 4, 1, 0, 7, 1, torch.device("cpu"),
                                    channels_last=True).epoch(0))
    assert torch.equal(again[0].local_crops, batches[0].local_crops)  # determined by the seed


RECIPES = {
    "three_globals_no_locals": MultiCropPolicy(
        (ViewPolicy(24, (0.3, 1.0)), ViewPolicy(24, (0.3, 1.0), blur_p=1.0), ViewPolicy(24, (0.5, 1.0), solarize_p=0.5)),
        ViewPolicy(16, (0.1, 0.3)), local_crops_number=0),
    "one_global_two_locals": MultiCropPolicy((ViewPolicy(32, (0.3, 1.0)),), ViewPolicy(16, (0.1, 0.3)), 2),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("backend", list(PIPELINES))
def test_every_pipeline_takes_any_view_recipe_and_sends_sample_indices(backend, recipe, converted_folders) -> None:
    policy = RECIPES[recipe]
    pipe = PIPELINES[backend](_data(converted_folders, backend), policy, 4, 1, 0, 3, 1, torch.device("cpu"))
    folder = ImageFolder(str(converted_folders["imagefolder"] / "train"))
    seen = []
    for batch in pipe.epoch(1):
        g, size = policy.n_global, policy.global_views[0].size
        assert batch.n_global == g and batch.batch_size == 4
        assert batch.global_crops.shape == (g * 4, 3, size, size)
        if policy.local_crops_number:
            assert batch.local_crops.shape == (policy.local_crops_number * 4, 3, 16, 16)
        else:
            assert batch.local_crops is None
        if batch.indices is not None:  # the ImageFolder index, which the converter keeps as the sample index
            assert [folder.samples[i][1] for i in batch.indices.tolist()] == batch.labels.tolist()
            seen += batch.indices.tolist()
    assert backend == "dali" or sorted(seen) == list(range(16))


def test_a_policy_rejects_what_no_pipeline_can_batch() -> None:
    with pytest.raises(ValueError, match="at least one global view"):
        MultiCropPolicy((), ViewPolicy(16, (0.1, 0.3)), 2)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        ViewPolicy(16, (0.1, 0.3), interpolation="nearest")
    with pytest.raises(ValueError, match="share one size"):
        MultiCropPolicy((ViewPolicy(32, (0.3, 1.0)), ViewPolicy(24, (0.3, 1.0))), ViewPolicy(16, (0.1, 0.3)), 2)


@pytest.mark.parametrize("script", ["train.py", "tools/convert_dataset.py"])
def test_help_loads_no_heavy_backend(script) -> None:
    """--help answers without importing torch, timm, DALI or FFCV (they take seconds to import)."""
    code = ("import runpy, sys, contextlib, io\n"
            f"sys.argv = [{script!r}, '--help']\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n"
            f"        runpy.run_path({script!r}, run_name='__main__')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "assert 'usage:' in out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'timm', 'nvidia.dali', 'ffcv') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# Small settings per registered method (the test below fails until a new method adds its own here).
TINY_METHODS = {
    "mokd": ({"arch_cnn": "resnet18", "arch_vit": "vit_tiny", "out_dim": 64, "global_size": 32, "local_size": 16,
              "input_size": 32, "local_crops_number": 2, "epochs": 2, "warmup_teacher_temp_epochs_cnn": 1,
              "warmup_teacher_temp_epochs_vit": 1}, {"optimizer": "sgd", "lr_cnn": 0.1, "warmup_epochs": 1}),
    "dogo": ({"image_size": 32, "n_proj_1": 16, "epochs": 2}, {}),
    "seed": ({"teacher_arch": "resnet18", "teacher_format": "moco", "global_size": 32, "local_crops_number": 2,
              "local_size": 16, "queue_size": 32, "epochs": 2}, {}),
    "mcl": ({"archs": ("resnet18", "resnet18"), "global_size": 32, "queue_size": 32, "epochs": 2}, {}),
    "lmcl": ({"image_size": 32, "neg_k": 8, "epochs": 2}, {}),
}
CPU = torch.device("cpu")


def _tiny(name: str):
    method_cls, train_cls = METHODS[name].config_classes()
    method, train = TINY_METHODS[name]
    return method_cls(**method), train_cls(batch_size_per_gpu=4, device="cpu", num_workers=1, **train)


def test_every_registered_method_has_tiny_settings_here() -> None:
    assert set(TINY_METHODS) == set(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_declares_its_name_settings_and_flags(name) -> None:
    entry = METHODS[name]
    cls = entry.method_class()
    assert cls.name == name and cls.configs == entry.config_classes()
    assert issubclass(entry.config_classes()[1], RunConfig) and cls.__mro__[1] is Method  # one level of inheritance
    actions = {a.dest: a for a in build_parser(name)._actions}
    for config_cls in entry.config_classes():
        for field in fields(config_cls):
            assert field.name in actions and actions[field.name].help, (name, field.name)
    others = {f.name for other in METHODS if other != name for c in METHODS[other].config_classes()[:1]
              for f in fields(c)} - {f.name for c in entry.config_classes() for f in fields(c)}
    assert not others & set(actions), f"--method {name} offers another method's flags {sorted(others & set(actions))}"
    method, train = parse_config(["--method", name])
    assert type(method) is entry.config_classes()[0] and type(train) is entry.config_classes()[1]


@pytest.mark.parametrize("name", list(METHODS))
def test_color_jitter_replaces_only_every_views_jitter_strengths(name) -> None:
    """``--color_jitter`` reaches every view of every method, and nothing else of the policy changes."""
    method, train = _tiny(name)
    own = METHODS[name].method_class().views(method, train)
    assert own == METHODS[name].method_class().make_policy(method, train)  # default: the method's own views
    train.color_jitter = (0.4, 0.3, 0.2, 0.45)
    moved = METHODS[name].method_class().views(method, train)
    assert [v.jitter for v in moved.views()] == [(0.4, 0.3, 0.2, 0.45)] * len(own.views())
    assert moved.local_view.jitter == (0.4, 0.3, 0.2, 0.45)
    assert [replace(v, jitter=o.jitter) for v, o in zip(moved.views(), own.views(), strict=True)] == own.views()
    assert (moved.mean, moved.std, moved.local_crops_number) == (own.mean, own.std, own.local_crops_number)


def test_color_jitter_is_checked() -> None:
    with pytest.raises(UsageError, match="hue <= 0.5"):
        parse_config(["--method", "mcl", "--color_jitter", "0.4", "0.4", "0.4", "0.6"])


@pytest.mark.parametrize("backend", list(PIPELINES))
@pytest.mark.parametrize("name", list(METHODS))
def test_every_pipeline_feeds_every_method(name, backend, converted_folders) -> None:
    """The method's own view recipe through each pipeline, then one engine step: finite terms, a total per optimiser."""
    method, train = _tiny(name)
    policy = METHODS[name].method_class().make_policy(method, train)
    pipe = PIPELINES[backend](_data(converted_folders, backend), policy, 4, 1, 0, 0, 1, CPU)
    batches = list(pipe.epoch(0))  # the whole epoch: a half-read FFCV epoch keeps its threads busy
    assert batches[0].n_global == policy.n_global
    labels = None
    if METHODS[name].method_class().needs_labels:
        if backend == "dali":  # no sample indices: refused by name, with the pipelines that work
            with pytest.raises(UsageError, match="--pipeline nvjpeg"):
                pipe.sample_labels()
            return
        labels = pipe.sample_labels()
        assert torch.equal(labels[batches[0].indices], batches[0].labels)  # the pipeline's labels are by index
    torch.manual_seed(0)
    step = TrainStep(method, train, DistContext(0, 1, 0, CPU), iters_per_epoch=len(pipe), labels=labels)
    before = {k: v.clone() for k, v in step.model.trainable().state_dict().items()}
    out = step(batches[0], 0, epoch=0)
    assert {f"loss_{opt}" for opt in step.specs} <= set(out)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in out.values())
    assert any(not torch.equal(v, step.model.trainable().state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_checkpoint_restores_the_next_step_exactly(name, tmp_path) -> None:
    method, train = _tiny(name)
    policy = METHODS[name].method_class().make_policy(method, train)
    batches = synthetic_batches(policy, 4, CPU)
    ctx = DistContext(0, 1, 0, CPU)
    torch.manual_seed(0)
    labels = synthetic_labels(16) if METHODS[name].method_class().needs_labels else None
    first = TrainStep(method, train, ctx, iters_per_epoch=4, labels=labels)
    first(next(batches), 0, epoch=0)
    config = run_settings(method, train)
    atomic_save(build_checkpoint(first.model, first.optimizers, first.scalers, 1, 4, [capture_rng(CPU)], config),
                tmp_path / "c.pth")
    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoint
    second = TrainStep(method, train, ctx, iters_per_epoch=4, labels=labels)
    ckpt = read_checkpoint(tmp_path / "c.pth", config)
    done, rng = load_checkpoint(ckpt, tmp_path / "c.pth", second.model, second.optimizers, second.scalers, 4)
    assert done == 1 and len(rng) == 1
    batch = next(batches)
    torch.manual_seed(2)
    a = first(batch, 1, epoch=0)
    torch.manual_seed(2)
    b = second(batch, 1, epoch=0)
    assert all(torch.equal(a[k], b[k]) for k in a), name
    for (key, p), q in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), (name, key)


def test_a_setting_added_later_reads_as_the_older_codes_value() -> None:
    """An L-MCL checkpoint written before ``--positive_draw`` existed drew positives the ``others``
    way: resuming it under the new default is refused by name, and resuming it with the old law is not."""
    method, train = _tiny("lmcl")
    now = run_settings(method, train)
    old = {"config": {k: v for k, v in now.items() if k != "positive_draw"}}
    added = METHODS["lmcl"].method_class().added_settings
    with pytest.raises(UsageError, match="positive_draw: checkpoint 'others' vs now 'official'"):
        check_settings(old, Path("c.pth"), now, added)
    check_settings(old, Path("c.pth"), {**now, "positive_draw": "others"}, added)
    check_settings({"config": now}, Path("c.pth"), now, added)


@pytest.mark.parametrize("name", list(METHODS))
def test_method_help_is_fast_and_loads_no_heavy_backend(name) -> None:
    code = ("import runpy, sys, time, contextlib, io\n"
            "start = time.perf_counter()\n"
            f"sys.argv = ['train.py', '--method', {name!r}, '--help']\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n"
            "        runpy.run_path('train.py', run_name='__main__')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'nvidia.dali', 'ffcv') if m in sys.modules))\n"
            "print(out.getvalue())\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded, _, text = result.stdout.partition("\n")
    assert loaded == "[]", result.stdout + result.stderr
    assert f"(--method {name})" in text and all(f"  {other}: " in text for other in METHODS)


def _import_graph(kind: str = "module_level") -> dict[str, list[str]]:
    """The import graph of mokd_fast and pipelines (``tests/import_graph.py``): ``module_level`` or ``all``.

    Built in a fresh interpreter: CPython 3.11's AST validator keeps one recursion counter per
    interpreter, so parsing while DALI or FFCV threads left by earlier tests compile code can fail
    with "AST constructor recursion depth mismatch".
    """
    import json

    result = subprocess.run([sys.executable, "-m", "tests.import_graph"], cwd=REPO, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)[kind]


# The layers, lowest first. A module may import its own layer and those below, never above; a
# method package imports methods.base/methods.common and nothing of another method's.
LAYERS = [
    ("pipelines", "mokd_fast.sample_data"),
    ("mokd_fast.core",),
    ("mokd_fast.models", "mokd_fast.convert"),
    ("mokd_fast.methods.base",),  # the contract
    ("mokd_fast.methods.common",),  # what several methods share
    ("mokd_fast.methods.*",),  # one package per method
    ("mokd_fast.methods",),  # the registry (methods/__init__.py)
    ("mokd_fast.eval",),
    ("mokd_fast.engine",),
    ("mokd_fast.cli", "mokd_fast.demo", "mokd_fast"),
    ("mokd_fast.bench",),
]


def layer_of(module: str) -> tuple[int, str]:
    """``(rank, unit)``: the module's layer and the package it belongs to (a method's own package for methods)."""
    parts = module.split(".")
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "mokd_fast.methods.*":
                if len(parts) >= 3 and parts[:2] == ["mokd_fast", "methods"]:
                    return rank, ".".join(parts[:3])
            elif module == prefix or (prefix not in ("mokd_fast", "mokd_fast.methods") and module.startswith(prefix + ".")):
                return rank, prefix
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS")


def test_imports_run_down_the_layers_only() -> None:
    """Every import (module level, inside functions, and strings naming modules) points to the same layer or below,
    and no method package imports another."""
    wrong = []
    for name, deps in _import_graph("all").items():
        rank, unit = layer_of(name)
        for dep in deps:
            dep_rank, dep_unit = layer_of(dep)
            between_methods = LAYERS[rank] == ("mokd_fast.methods.*",) and unit != dep_unit
            if dep_rank > rank or (dep_rank == rank and between_methods):
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports against the layering: " + "; ".join(wrong)


def test_the_root_of_mokd_fast_holds_only_entry_modules_and_packages() -> None:
    root = REPO / "mokd_fast"
    assert sorted(p.name for p in root.glob("*.py")) == ["__init__.py", "cli.py", "demo.py"]


def test_pipelines_never_import_mokd_fast() -> None:
    """The data layer stands alone: mokd_fast depends on pipelines, never the other way round."""
    for name, deps in _import_graph().items():
        if name.split(".")[0] == "pipelines":
            assert not [d for d in deps if d.split(".")[0] == "mokd_fast"], f"{name} imports {deps}"


def test_no_import_cycles() -> None:
    """No module-level import cycle in mokd_fast or pipelines (TYPE_CHECKING imports count; lazy ones do not)."""
    graph = _import_graph()
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        state[name] = "open"
        for dep in graph[name]:
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(chain[chain.index(dep):] + [name, dep])
            if dep not in state:
                visit(dep, [*chain, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("tool", ["train.py", "tools/convert_dataset.py", "tools/benchmark.py", "tools/gpu_suite.py",
                                  "tools/eval_knn.py", "tools/eval_linear.py", "tools/export.py",
                                  "tools/eval_classifiers.py", "tools/learning_proof.py"])
def test_help_answers_without_importing_torch(tool) -> None:
    """``--help`` of every command loads neither torch nor timm (importing torch alone takes seconds)."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{tool!r}, '--help']\n"
            "try:\n"
            f"    runpy.run_path({tool!r}, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'timm') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "usage:" in result.stdout and result.stdout.rstrip().endswith("LOADED []"), result.stdout[-300:] + result.stderr
