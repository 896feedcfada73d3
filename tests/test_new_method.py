"""A new method is one folder plus one registry line: nothing else in the project needs to know its name.

The method below lives in a temporary package outside the repository; the test registers it (the one
line a contributor adds to ``mokd_fast/methods/__init__.py``) and trains it for two steps through
``train.py``, resumes it, and times its step with ``tools/benchmark.py --mode step``.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from mokd_fast.cli import main as train_main
from mokd_fast.methods import METHODS, MethodEntry

REPO = Path(__file__).resolve().parents[1]

CONFIG = '''
from dataclasses import dataclass

from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.settings import setting


@dataclass
class TinyConfig:
    epochs: int = setting(2, "Training epochs.")
    global_size: int = setting(32, "View side.")
    width: int = setting(8, "Embedding width.")


@dataclass
class TinyTrainConfig(RunConfig):
    lr: float = setting(0.05, "Learning rate.")
'''

METHOD = '''
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mokd_fast.methods.base import Losses, Method, OptimizerSpec, StepInfo
from mokd_fast.methods.common.monitors import embedding_spread
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy, ViewPolicy

from tinymethod.config import TinyConfig, TinyTrainConfig


class Tiny(Method):
    """Two views of each image pulled together by one small CNN (a test method, not a useful one)."""

    name = "tiny"
    configs = (TinyConfig, TinyTrainConfig)

    def __init__(self, cfg: TinyConfig, train: TinyTrainConfig | None = None) -> None:
        super().__init__(cfg, train if train is not None else TinyTrainConfig())
        self.net = nn.Sequential(nn.Conv2d(3, cfg.width, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten())

    @classmethod
    def make_policy(cls, cfg: TinyConfig, train: TinyTrainConfig) -> MultiCropPolicy:
        view = ViewPolicy(cfg.global_size, (0.2, 1.0))
        return MultiCropPolicy((view, view), view, local_crops_number=0)

    def trainable(self) -> nn.Module:
        return self.net

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        return {"net": OptimizerSpec(torch.optim.SGD(self.net.parameters(), lr=0.0), [("lr", None)],
                                     dict(self.net.named_parameters()))}

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        return {"lr": np.full(self.epochs * iters_per_epoch, self.train_cfg.lr)}

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        z = F.normalize(self.run_trainable()(batch.global_crops).float(), dim=1)  # [2B, width]
        a, b = z.chunk(2)
        loss = (2 - 2 * (a * b).sum(dim=1)).mean()
        return Losses({"align": loss, "net_spread": embedding_spread(z)}, {"net": loss})

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        return {"net": (self.net, "cnn")}

    def describe(self) -> str:
        return f"Tiny CNN ({sum(p.numel() for p in self.net.parameters())} parameters)"

    def checkpoint_state(self) -> dict[str, Any]:
        return {"tiny_net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        if "tiny_net" not in ckpt:
            raise ValueError(f"no tiny_net entry; the checkpoint has {sorted(ckpt)}")
        self.net.load_state_dict(ckpt["tiny_net"])
        return {k: v for k, v in ckpt.items() if k != "tiny_net"}
'''


@pytest.fixture
def tiny_registered(tmp_path, monkeypatch):
    """The tiny method's folder on the path and its one registry line."""
    package = tmp_path / "outside" / "tinymethod"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A method defined outside the project."""\n')
    (package / "config.py").write_text(CONFIG)
    (package / "method.py").write_text(METHOD)
    monkeypatch.syspath_prepend(str(tmp_path / "outside"))
    monkeypatch.setitem(METHODS, "tiny", MethodEntry("tinymethod.method:Tiny", "tinymethod.config:TinyConfig",
                                                     "tinymethod.config:TinyTrainConfig", "a two-view test method"))


def _benchmark_main():
    spec = importlib.util.spec_from_file_location("benchmark_tool", REPO / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_method_in_its_own_folder_trains_resumes_and_benchmarks(tiny_registered, photo_folder, tmp_path) -> None:
    flags = ["--method", "tiny", "--data_path", str(photo_folder), "--batch_size_per_gpu", "4", "--num_workers", "1",
             "--log_every", "1", "--device", "cpu", "--tensorboard", "False", "--output_dir", str(tmp_path / "run")]
    assert train_main([*flags, "--max_steps", "1"]) == 0
    assert train_main([*flags, "--max_steps", "2", "--resume", str(tmp_path / "run" / "checkpoint.pth")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and all(line["align"] >= 0 for line in lines)
    assert _benchmark_main()(["--mode", "step", "--method", "tiny", "--global_size", "32", "--batch_size_per_gpu", "4",
                              "--steps", "2", "--warmup", "1", "--baseline", "--device", "cpu",
                              "--json", str(tmp_path / "bench.json")]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["method"] == "tiny" and [r["variant"] for r in record["runs"]] == ["ours", "baseline"]
    assert all(r["samples_per_s"] > 0 for r in record["runs"])

