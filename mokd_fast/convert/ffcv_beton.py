"""FFCV ``.beton``: a scan pass that decides every file's fate, then FFCV's own single-file writer.

FFCV's ``DatasetWriter`` needs the number of samples up front and cannot skip one mid-write, so a
first pass (in worker processes) opens every file, sorts out what is skipped or fixed and records it
in ``.scan.jsonl`` chunk by chunk. The second pass hands the good files, as RGB arrays, to
``DatasetWriter`` (fields ``image`` RGBImageField, ``label`` and ``index`` IntField), which writes to a
temporary name renamed at the end. FFCV cannot continue a half-written file: ``--resume`` keeps the
finished scan chunks and writes the ``.beton`` again from the start.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mokd_fast.convert.images import Skip, prepare
from mokd_fast.convert.parallel import tick
from mokd_fast.convert.sources import Sample
from pipelines.formats import BETON, import_ffcv

SCAN = ".scan.jsonl"


@dataclass(frozen=True)
class ScanTask:
    """A chunk of samples to open and sort into converted / fixed / skipped."""

    chunk: int
    samples: tuple[Sample, ...]
    max_resolution: int


def scan_chunk(task: ScanTask) -> dict[str, Any]:
    """Opens every file of the chunk; returns its manifest rows, skips and fixes."""
    result: dict[str, Any] = {"chunk": task.chunk, "skipped": [], "fixed": [], "manifest": []}
    for sample in task.samples:
        try:
            prepared = prepare(sample.path, task.max_resolution)
        except Skip as reason:
            result["skipped"].append({"path": sample.path, "reason": str(reason)})
        else:
            if prepared.fixed:
                result["fixed"].append({"path": sample.path, "what": "; ".join(prepared.fixed)})
            width, height = prepared.size
            result["manifest"].append([sample.index, sample.label, width, height, sample.path])
        tick()
    return result


def finished_chunks(out: Path) -> dict[int, dict[str, Any]]:
    """Scan chunks a previous run completed (a torn last line from a kill is ignored)."""
    done = {}
    path = out / SCAN
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                chunk = json.loads(line)
            except ValueError:
                continue
            done[chunk["chunk"]] = chunk
    return done


class PreparedImages:
    """The good files as FFCV samples ``(image [H, W, 3] uint8, label, index)``."""

    def __init__(self, rows: list[list], max_resolution: int) -> None:
        self.rows = rows
        self.max_resolution = max_resolution

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        index, label, width, height, path = self.rows[i]
        try:
            prepared = prepare(path, self.max_resolution)
        except Skip as reason:
            raise RuntimeError(f"{path} changed during the conversion ({reason}); run the conversion again") from reason
        if prepared.size != (width, height):
            raise RuntimeError(f"{path} changed during the conversion (size); run the conversion again")
        return prepared.array(), label, index


def write_beton(out: Path, rows: list[list], options: dict[str, Any], workers: int) -> Path:
    """Writes ``rows`` (manifest order) with FFCV's DatasetWriter; returns the ``.beton`` path."""
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    final = out / BETON
    tmp = out / f".{BETON}.tmp"
    tmp.unlink(missing_ok=True)
    image = RGBImageField(
        write_mode=options["write_mode"], max_resolution=options["max_resolution"],
        jpeg_quality=options["jpeg_quality"], compress_probability=options["compress_probability"],
    )
    writer = DatasetWriter(str(tmp), {"image": image, "label": IntField(), "index": IntField()}, num_workers=workers)
    writer.from_indexed_dataset(PreparedImages(rows, options["max_resolution"]), chunksize=64)
    tmp.replace(final)
    return final
