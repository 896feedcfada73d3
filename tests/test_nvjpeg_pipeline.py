"""pipelines/nvjpeg.py over real shards from the converter, on CPU: table, canvas, contract, prefetch, errors."""

import gc
import json
import shutil
import sys
import tarfile
import threading

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from mokd_fast.convert.cli import main as convert_main
from mokd_fast.core import run_config
from mokd_fast.core.errors import UsageError
from pipelines import PIPELINES, resolve_pipeline
from pipelines.nvjpeg import NvJPEGPipeline, load_table
from pipelines.policy import MultiCropPolicy

POLICY = MultiCropPolicy.mokd(48, 24, (0.25, 1.0), (0.05, 0.25), 2)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def shards(photo_folder, tmp_path_factory):
    """The 16 photos as DALI shards of 5 (4 shards, the last one short)."""
    out = tmp_path_factory.mktemp("nvjpeg") / "dali"
    assert convert_main([str(photo_folder), str(out), "--format", "dali", "--shard-size", "5", "--workers", "1"]) == 0
    return out


def _pipe(data, **kw) -> NvJPEGPipeline:
    values = {"batch_size": 4, "world_size": 1, "rank": 0, "seed": 3, "num_workers": 2, "device": CPU, **kw}
    return NvJPEGPipeline(data, POLICY, **values)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nvjpeg-prefetch"]


def _same(a, b) -> bool:
    return (torch.equal(a.global_crops, b.global_crops) and torch.equal(a.local_crops, b.local_crops)
            and torch.equal(a.labels, b.labels))


def test_table_locates_every_jpeg_and_agrees_with_the_manifest(shards):
    table = load_table(shards)
    rows = [json.loads(line) for line in (shards / "manifest.jsonl").read_text().splitlines()]
    assert len(table) == len(rows) == 16 and len(table.tars) == 4
    for i, (index, label, width, height, source) in enumerate(rows):
        tar = table.tars[table.shard[i]]
        with tarfile.open(tar) as f:
            expected = f.extractfile(f"{index:08d}.jpg").read()
        with open(tar, "rb") as f:
            f.seek(int(table.offset[i]))
            assert f.read(int(table.size[i])) == expected
        assert table.names[i] == f"{index:08d}.jpg" and table.sources[i] == source
        assert (table.labels[i], table.widths[i], table.heights[i]) == (label, width, height)


def test_canvas_holds_each_decoded_jpeg_top_left_and_zeros_elsewhere(shards):
    pipe = _pipe(shards)
    ids = [7, 0, 12, 3]
    canvas, heights, widths = pipe._canvas(ids)
    assert canvas.dtype == torch.uint8 and canvas.shape == (4, 3, int(heights.max()), int(widths.max()))
    assert canvas.is_contiguous(memory_format=torch.channels_last)
    for b, i in enumerate(ids):
        with tarfile.open(pipe.table.tars[pipe.table.shard[i]]) as f:
            data = torch.frombuffer(bytearray(f.extractfile(pipe.table.names[i]).read()), dtype=torch.uint8)
        h, w = int(heights[b]), int(widths[b])
        assert torch.equal(canvas[b, :, :h, :w], decode_jpeg(data, mode=ImageReadMode.RGB))
        assert not canvas[b, :, h:].any() and not canvas[b, :, :, w:].any()


def test_batches_follow_the_contract_repeat_for_a_seed_and_resume_mid_epoch(shards):
    pipe = _pipe(shards, channels_last=True)
    first, again = list(pipe.epoch(1)), list(_pipe(shards, channels_last=True).epoch(1))
    assert len(first) == len(pipe) == 4 and pipe.num_images == 16
    for a, b in zip(first, again):
        assert a.global_crops.shape == (8, 3, 48, 48) and a.local_crops.shape == (8, 3, 24, 24)
        assert a.global_crops.dtype == a.local_crops.dtype == torch.float32
        assert a.global_crops.is_contiguous(memory_format=torch.channels_last)
        assert a.local_crops.is_contiguous(memory_format=torch.channels_last)
        assert a.labels.dtype == torch.int64 and a.labels.shape == (4,)
        assert _same(a, b)
    labels = torch.cat([b.labels for b in first])
    assert sorted(labels.tolist()) == sorted(load_table(shards).labels.tolist())  # every image once
    other = list(pipe.epoch(2))
    assert not torch.equal(labels, torch.cat([b.labels for b in other]))
    assert not torch.equal(first[0].global_crops, other[0].global_crops)
    tail = list(pipe.epoch(1, start_batch=2))
    assert len(tail) == 2 and all(_same(a, b) for a, b in zip(tail, first[2:]))


def test_prefetch_does_not_change_the_batches(shards):
    batches = {n: list(_pipe(shards, prefetch=n).epoch(0)) for n in (0, 1, 2)}
    assert all(_same(a, b) and _same(a, c) for a, b, c in zip(batches[0], batches[1], batches[2]))


def test_an_abandoned_epoch_stops_its_thread_and_the_next_epoch_runs(shards):
    pipe = _pipe(shards, prefetch=2)
    for _ in pipe.epoch(0):
        break  # the for loop drops the generator: GeneratorExit stops the producer
    assert not _prefetch_threads()
    started = pipe.epoch(0)
    next(started)
    del started
    gc.collect()
    assert not _prefetch_threads()
    assert all(_same(a, b) for a, b in zip(pipe.epoch(1), _pipe(shards, prefetch=0).epoch(1)))


@pytest.fixture(scope="module")
def corrupt(shards, tmp_path_factory):
    """A copy of the shards in which one sample's JPEG bytes are overwritten with garbage of the same length."""
    out = tmp_path_factory.mktemp("corrupt") / "dali"
    shutil.copytree(shards, out)
    table = load_table(out)
    victim = 6
    with open(table.tars[table.shard[victim]], "r+b") as f:
        f.seek(int(table.offset[victim]))
        f.write(np.random.default_rng(0).integers(0, 256, int(table.size[victim]), dtype=np.uint8).tobytes())
    return out, table, victim


@pytest.mark.parametrize("prefetch", [0, 2])
def test_an_undecodable_jpeg_is_named_with_its_shard_member_and_source(corrupt, prefetch):
    out, table, victim = corrupt
    pipe = _pipe(out, prefetch=prefetch, batch_size=8)
    with pytest.raises(RuntimeError) as caught:
        for _ in pipe.epoch(0):
            pass
    message = str(caught.value)
    for part in (table.tars[table.shard[victim]], table.names[victim], table.sources[victim], "convert_dataset.py"):
        assert part in message
    assert not _prefetch_threads()


def test_data_that_is_not_a_dali_conversion_is_refused_with_the_converter_command(photo_folder, shards, tmp_path):
    assert convert_main([str(photo_folder), str(tmp_path / "ffcv"), "--format", "ffcv", "--write-mode", "raw"]) == 0
    for data in (photo_folder, tmp_path / "ffcv", tmp_path / "ffcv" / "train.beton"):
        with pytest.raises(UsageError, match="convert_dataset.py SRC OUT --format dali"):
            _pipe(data)
    with pytest.raises(UsageError, match="needs more images"):
        _pipe(shards, batch_size=17)


def test_an_index_and_manifest_that_disagree_are_refused(shards, tmp_path):
    out = tmp_path / "dali"
    shutil.copytree(shards, out)
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(UsageError, match=f"{manifest}.*re-run python tools/convert_dataset.py"):
        _pipe(out)


def test_auto_picks_nvjpeg_for_shards_on_cuda_only_without_dali(shards, photo_folder, monkeypatch):
    cuda = torch.device("cuda", 0)
    for device in (None, CPU):
        assert resolve_pipeline("auto", str(shards), device) == ("dali", str(shards))
    assert resolve_pipeline("auto", str(shards), cuda) == ("dali", str(shards))
    assert resolve_pipeline("auto", str(photo_folder), cuda) == ("torchvision", str(photo_folder))
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import nvidia.dali now raises ImportError
    assert resolve_pipeline("auto", str(shards), cuda) == ("nvjpeg", str(shards))
    assert resolve_pipeline("auto", str(shards), CPU) == ("dali", str(shards))  # CPU: unchanged
    assert resolve_pipeline("nvjpeg", str(shards), CPU) == ("nvjpeg", str(shards))


def test_every_registered_pipeline_is_a_train_py_choice():
    assert PIPELINES["nvjpeg"] is NvJPEGPipeline
    assert set(run_config.PIPELINES) == {"auto", *PIPELINES}
