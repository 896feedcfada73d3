"""Guards of the files and command lines users already have: checkpoint layouts and flag names stay put.

Fresh checkpoints of every method match their golden record (entries, keys, shapes, dtypes); a
checkpoint filled with zeros from the record alone loads through ``train.py``'s resume path (and,
for MOKD, ``load_official``); every flag name ever recorded is still accepted. See ``tests/golden.py``.
"""

import json
from pathlib import Path

import pytest
import torch

from mokd_fast.cli import parse_config
from mokd_fast.engine.checkpoint import capture_rng
from mokd_fast.engine.trainer import Trainer, run_settings
from mokd_fast.methods.mokd.official import load_official
from tests.conftest import method_flags
from tests.golden import GOLDEN, METHODS, encode, flag_names, zero_filled


def _record(method: str):
    return json.loads((GOLDEN / f"checkpoint_{method}.json").read_text())


def _diff(a, b, path: str = "") -> str | None:
    """The first place two records differ, for the message."""
    if type(a) is not type(b):
        return f"{path}: {a!r:.80} vs {b!r:.80}"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        return next((d for k in a if (d := _diff(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _diff(x, y, f"{path}[{i}]"))), None)
    return None if a == b else f"{path}: {a!r} vs {b!r}"


@pytest.mark.parametrize("method", METHODS)
def test_a_fresh_checkpoint_has_the_golden_layout(method, method_runs) -> None:
    fresh = encode(torch.load(method_runs[method]))
    difference = _diff(fresh, _record(method))
    assert difference is None, (f"{method}'s checkpoint layout changed at {difference}; files users have would no "
                                "longer load. If deliberate, rewrite tests/golden with python -m tests.golden")


@pytest.mark.parametrize("method", METHODS)
def test_a_zero_filled_golden_checkpoint_resumes(method, method_runs, photo_folder, tmp_path) -> None:
    method_cfg, run_cfg = parse_config([*method_flags(method, photo_folder, method_runs["moco"]),
                                        "--output_dir", str(tmp_path / "run")])
    settings = run_settings(method_cfg, run_cfg)
    ckpt = zero_filled(_record(method), [capture_rng(torch.device("cpu"))], settings)
    torch.save(ckpt, tmp_path / "zero.pth")
    run_cfg.resume = str(tmp_path / "zero.pth")
    trainer = Trainer(method_cfg, run_cfg)
    assert trainer.start_step == ckpt["mokd_fast"]["step"]
    for name, (backbone, _) in trainer.model.eval_backbones().items():
        assert all(not p.any() for p in backbone.state_dict().values() if p.is_floating_point()), name
    if method == "mokd":
        rest = load_official(trainer.model, ckpt)
        assert "optimizer_cnn" in rest and "optimizer_vit" in rest


@pytest.mark.parametrize("method", METHODS)
def test_every_recorded_flag_is_still_accepted(method) -> None:
    recorded = json.loads((GOLDEN / "flags.json").read_text())[method]
    gone = sorted(set(recorded) - set(flag_names(method)))
    assert not gone, f"train.py --method {method} no longer accepts {gone}: a renamed flag needs an alias"


def test_the_records_exist_for_every_method() -> None:
    assert sorted(json.loads((GOLDEN / "flags.json").read_text())) == sorted(METHODS)
    assert all(Path(GOLDEN / f"checkpoint_{m}.json").is_file() for m in METHODS)
