"""tools/convert_dataset.py: round trips through real DALI shards and a real FFCV .beton, problem files, resume, verify."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mokd_fast.convert.cli import main
from mokd_fast.convert.images import prepare
from mokd_fast.convert.verify import dali_pipeline
from tests.bad_images import PROBLEMS, make_source

REPO = Path(__file__).resolve().parents[1]
N_SKIPPED = sum(1 for kind, _ in PROBLEMS.values() if kind == "skipped")


@pytest.fixture(scope="module")
def source(photo_folder, tmp_path_factory):
    return make_source(photo_folder, tmp_path_factory.mktemp("src") / "data")


def _expected(source: Path) -> dict[str, int]:
    """Source path -> label, for every file that must convert (torchvision's sorted class order)."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    return {str(f): classes.index(f.parent.name) for f in sorted(source.rglob("*"))
            if f.is_file() and PROBLEMS.get(f.name, ("ok",))[0] != "skipped"}


def _check_report(report: dict, source: Path, fmt: str) -> None:
    expected = _expected(source)
    assert report["format"] == fmt and report["converted"] == len(expected) and report["classes"] == 5
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    fixed = {Path(f["path"]).name: f["what"] for f in report["fixed"]}
    for name, (kind, phrase) in PROBLEMS.items():
        if kind == "skipped":
            assert phrase in skipped[name], (name, skipped.get(name))
        elif fmt == "ffcv" and name == "png_named.JPEG":
            assert name not in fixed  # FFCV stores pixels; nothing changed because of the format
        else:
            assert phrase in fixed[name], (name, fixed.get(name))
    assert len(skipped) == N_SKIPPED
    assert set(report) >= {"format", "source", "converted", "skipped", "fixed", "classes", "bytes", "seconds", "options"}


def test_dali_round_trip_through_dalis_own_reader(source, tmp_path, capsys):
    out = tmp_path / "dali"
    assert main([str(source), str(out), "--format", "dali", "--shard-size", "7", "--workers", "2", "--verify", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith(f"converted {len(_expected(source))}, fixed 8, skipped {N_SKIPPED} ->")
    assert lines[-1] == "verify (all): ok"
    report = json.loads((out / "report.json").read_text())
    _check_report(report, source, "dali")
    assert json.loads((out / "classes.json").read_text()) == {"astronaut": 0, "chelsea": 1, "coffee": 2, "rocket": 3, "zz_problems": 4}
    manifest = {row[0]: row for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    expected = _expected(source)
    assert {row[4]: row[1] for row in manifest.values()} == expected
    # Verbatim copies: an untouched JPEG's bytes are stored unchanged.
    verbatim = 0
    for shard in report["shards"]:
        with tarfile.open(out / shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    path = Path(manifest[int(member.name[:8])][4])
                    if path.parent.name != "zz_problems":
                        assert tar.extractfile(member).read() == path.read_bytes()
                        verbatim += 1
    assert verbatim == 16
    # DALI's webdataset reader opens the shards through our indexes and decodes every image.
    pipe = dali_pipeline(out)
    assert pipe.reader_meta("reader")["epoch_size"] == len(expected)
    labels = []
    for _ in range(len(expected)):
        image, label = pipe.run()
        assert image.as_array().shape[-1] == 3
        labels.append(int(bytes(label.as_array()[0]).decode()))
    assert labels == [manifest[i][1] for i in sorted(manifest)]


def test_ffcv_round_trip_raw_pixels_equal_the_prepared_images(source, tmp_path):
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.reader import Reader

    out = tmp_path / "ffcv"
    assert main([str(source), str(out), "--format", "ffcv", "--write-mode", "raw", "--workers", "2", "--verify", "all"]) == 0
    report = json.loads((out / "report.json").read_text())
    _check_report(report, source, "ffcv")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    reader = Reader(str(out / "train.beton"))
    raw = np.memmap(out / "train.beton", dtype=np.uint8, mode="r")
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    assert reader.num_samples == len(rows) == report["converted"]
    for pos, row in enumerate(rows):
        image, label, index = reader.metadata[pos]["f0"], int(reader.metadata[pos]["f1"]), int(reader.metadata[pos]["f2"])
        assert (index, label) == (row[0], row[1])
        ptr = int(image["data_ptr"])
        stored = np.asarray(raw[ptr : ptr + sizes[ptr]]).reshape(row[3], row[2], 3)
        assert np.array_equal(stored, prepare(row[4], 512).array()), row[4]
    # FFCV's own loader reads every sample back.
    loader = Loader(str(out / "train.beton"), batch_size=4, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={"image": [RandomResizedCropRGBImageDecoder((32, 32))], "label": [IntDecoder()],
                               "index": [IntDecoder()]})
    seen = [int(i) for _, _, index in loader for i in index[:, 0]]
    assert seen == [row[0] for row in rows]


def _run_and_kill(cmd: list[str], ready) -> None:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, "the conversion ended before it was killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, workers included
    proc.wait()


@pytest.fixture(scope="module")
def slow_source(photo_folder, tmp_path_factory):
    """40 large JPEGs (each must be resized), so a conversion lasts long enough to be killed."""
    root = tmp_path_factory.mktemp("slow") / "data"
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
    photos = sorted(photo_folder.rglob("*.jpg"))
    for i in range(40):
        big = Image.open(photos[i % len(photos)]).convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC)
        big.save(root / f"class{i % 2}" / f"img{i:03d}.jpg", quality=90)
    return root


def test_dali_resume_after_sigkill_writes_the_same_shards(slow_source, tmp_path):
    flags = ["--format", "dali", "--shard-size", "2", "--workers", "1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([str(slow_source), str(whole), *flags]) == 0
    script = str(REPO / "tools/convert_dataset.py")
    _run_and_kill([sys.executable, script, str(slow_source), str(killed), *flags],
                  lambda: len(list((killed / "shards").glob(".*.json"))) >= 3)
    done_before = len(list((killed / "shards").glob(".*.json")))
    assert 3 <= done_before < 20 and not (killed / "report.json").exists()
    assert main([str(slow_source), str(killed), *flags]) == 2  # a partial output is never overwritten
    assert main([str(slow_source), str(killed), *flags, "--resume", "--verify", "all"]) == 0
    for shard in sorted((whole / "shards").glob("0*")):
        assert shard.read_bytes() == (killed / "shards" / shard.name).read_bytes(), shard.name
    assert not list((killed / "shards").glob(".*.tmp"))
    a, b = (json.loads((d / "report.json").read_text()) for d in (whole, killed))
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def _beton_content(out: Path) -> list[tuple]:
    from ffcv.reader import Reader

    reader = Reader(str(out / "train.beton"))
    raw = np.memmap(out / "train.beton", dtype=np.uint8, mode="r")
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    content = []
    for meta in reader.metadata:
        image, ptr = meta["f0"], int(meta["f0"]["data_ptr"])
        content.append((int(meta["f2"]), int(meta["f1"]), int(image["width"]), int(image["height"]),
                        bytes(raw[ptr : ptr + sizes[ptr]])))
    return content


def test_ffcv_resume_after_sigkill_has_the_same_content(slow_source, tmp_path):
    flags = ["--format", "ffcv", "--workers", "1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([str(slow_source), str(whole), *flags]) == 0
    script = str(REPO / "tools/convert_dataset.py")
    _run_and_kill([sys.executable, script, str(slow_source), str(killed), *flags],
                  lambda: (killed / ".scan.jsonl").exists() and (killed / ".scan.jsonl").stat().st_size > 0)
    assert not (killed / "report.json").exists() and not (killed / "train.beton").exists()
    assert main([str(slow_source), str(killed), *flags, "--resume", "--verify", "all"]) == 0
    assert _beton_content(whole) == _beton_content(killed)


def test_verify_catches_corrupted_outputs(source, tmp_path, capsys):
    out = tmp_path / "dali"
    assert main([str(source), str(out), "--format", "dali", "--shard-size", "50"]) == 0
    assert main([str(source), str(out), "--format", "dali", "--verify", "all"]) == 0  # re-check a finished output
    tar_path = out / "shards" / "000000.tar"
    data = bytearray(tar_path.read_bytes())
    data[512:576] = b"\0" * 64  # the first image's JPEG header
    tar_path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([str(source), str(out), "--format", "dali", "--verify", "all"]) == 1
    assert "00000000.jpg: image does not decode" in capsys.readouterr().err

    ffcv_out = tmp_path / "ffcv"
    assert main([str(source), str(ffcv_out), "--format", "ffcv", "--limit", "10"]) == 0
    beton = ffcv_out / "train.beton"
    beton.write_bytes(beton.read_bytes()[: beton.stat().st_size // 2])
    assert main([str(source), str(ffcv_out), "--format", "ffcv", "--verify", "all"]) == 1


def test_list_file_source_and_limit(source, tmp_path):
    photos = sorted(p for p in source.rglob("*.jpg") if p.parent.name != "zz_problems")
    listing = tmp_path / "train.txt"
    listing.write_text("# path label\n" + "".join(f"{p} {i % 3}\n" for i, p in enumerate(photos)))
    out = tmp_path / "out"
    assert main([str(listing), str(out), "--format", "dali", "--limit", "6", "--verify"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r[1], r[4]) for r in rows] == [(i % 3, str(p)) for i, p in enumerate(photos[:6])]


@pytest.mark.parametrize(("argv", "needle"), [
    (["/no/such/folder", "OUT", "--format", "dali"], "does not exist"),
    (["SRC", "OUT_NONEMPTY", "--format", "dali"], "is not empty"),
])
def test_bad_usage_is_a_clear_error(argv, needle, source, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something.txt").write_text("x")
    argv = [str(source) if a == "SRC" else str(busy) if a == "OUT_NONEMPTY" else str(tmp_path / "o") if a == "OUT" else a
            for a in argv]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_missing_ffcv_says_how_to_install_it(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ffcv", None)
    assert main([str(source), str(tmp_path / "o"), "--format", "ffcv"]) == 2
    assert "apt-get install -y libturbojpeg0-dev libopencv-dev pkg-config" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the check


def test_missing_dali_is_named_with_its_install_command(source, tmp_path, monkeypatch, capsys):
    out = tmp_path / "dali"
    assert main([str(source), str(out), "--format", "dali", "--limit", "5"]) == 0
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    assert main([str(source), str(out), "--format", "dali", "--verify"]) == 0  # the shards themselves are fine
    assert "pip install nvidia-dali-cuda130" in capsys.readouterr().out
