"""pipelines/ffcv.py over a real .beton: each image decoded once onto the canvas, batches by the contract."""

import json

import numpy as np
import pytest
import torch

from mokd_fast.convert.cli import main as convert_main
from mokd_fast.convert.images import prepare
from mokd_fast.core.errors import UsageError
from pipelines.ffcv import FFCVPipeline
from pipelines.policy import MultiCropPolicy

POLICY = MultiCropPolicy.mokd(64, 32, (0.25, 1.0), (0.05, 0.25), 2)


@pytest.fixture(scope="module")
def beton(photo_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ffcv") / "out"
    assert convert_main([str(photo_folder), str(out), "--format", "ffcv", "--write-mode", "raw", "--max-resolution", "160"]) == 0
    return out


@pytest.fixture(scope="module")
def pipe(beton):
    """Built once: FFCV compiles its pipeline (numba) per Loader, which takes seconds."""
    return FFCVPipeline(beton / "train.beton", POLICY, 4, 1, 0, seed=3, num_workers=2, device=torch.device("cpu"),
                        channels_last=True)


def test_canvas_holds_each_image_decoded_once_at_its_size(beton, pipe):
    rows = {r[0]: r for r in map(json.loads, (beton / "manifest.jsonl").read_text().splitlines())}
    seen = []
    for canvas, label, index in pipe.loader:
        assert canvas.dtype == torch.uint8 and canvas.shape[1:] == (int(pipe.heights.max()), int(pipe.widths.max()), 3)
        for b, i in enumerate(index[:, 0].tolist()):
            _, lab, width, height, path = rows[i]
            assert label[b, 0].item() == lab
            assert np.array_equal(canvas[b, :height, :width].numpy(), prepare(path, 160).array())
            seen.append(i)
    assert sorted(seen) == sorted(rows)  # one epoch, every image once


def test_batches_follow_the_contract_and_repeat_for_a_seed(pipe):
    first, second = list(pipe.epoch(1)), list(pipe.epoch(1))
    assert len(first) == 4
    for a, b in zip(first, second):
        assert a.global_crops.shape == (8, 3, 64, 64) and a.local_crops.shape == (8, 3, 32, 32)
        assert a.global_crops.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a.global_crops, b.global_crops) and torch.equal(a.labels, b.labels)
    other_epoch = list(pipe.epoch(2))
    assert not torch.equal(first[0].global_crops, other_epoch[0].global_crops)
    tail = list(pipe.epoch(1, start_batch=2))
    assert len(tail) == 2 and torch.equal(tail[0].local_crops, first[2].local_crops)


def test_a_folder_is_refused_with_the_converter_command(photo_folder):
    with pytest.raises(UsageError, match="convert_dataset.py SRC OUT --format ffcv"):
        FFCVPipeline(photo_folder, POLICY, 4, 1, 0, 0, 1, torch.device("cpu"))
