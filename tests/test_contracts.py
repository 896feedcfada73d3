"""Contracts over the registries (parametrised from them, so a new backend is covered when registered)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder

from pipelines import BACKENDS, PIPELINES
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
