"""DALI webdataset shards: ``NNNNNNNN.jpg`` + ``NNNNNNNN.cls`` per sample in tar files, each with a DALI index.

The index is the v1.2 text format DALI's ``wds2idx`` writes (``v1.2 <samples>``, then per sample
``<ext> <data offset> <size> <member name>`` for each of its files), so ``fn.readers.webdataset``
opens the shards with ``index_paths`` and no scan. Shards are independent tasks: each is written under
temporary names and renamed, then its summary (``.NNNNNN.json``) marks it done, so ``--resume``
skips finished shards and rewrites the rest to the same bytes.
"""

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mokd_fast.convert.images import Skip, prepare
from mokd_fast.convert.output import write_json_atomic
from mokd_fast.convert.parallel import tick
from mokd_fast.convert.sources import Sample
from pipelines.formats import INDEX_VERSION

SHARDS = "shards"


@dataclass(frozen=True)
class ShardTask:
    """One shard: its number, its source samples, where and how to write it."""

    shard: int
    samples: tuple[Sample, ...]
    out: str
    max_resolution: int
    jpeg_quality: int


def shard_files(out: Path, shard: int) -> tuple[Path, Path, Path]:
    """(tar, index, done-marker) paths of a shard."""
    folder = out / SHARDS
    return folder / f"{shard:06d}.tar", folder / f"{shard:06d}.idx", folder / f".{shard:06d}.json"


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> int:
    """Appends a member with fixed metadata (identical bytes on every run); returns its data offset."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644
    header_at = tar.offset
    tar.addfile(info, io.BytesIO(payload))
    return header_at + len(info.tobuf(tar.format, tar.encoding, tar.errors))


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Writes one shard and its index; returns (and saves) its summary."""
    out = Path(task.out)
    tar_path, idx_path, done_path = shard_files(out, task.shard)
    tmp_tar, tmp_idx = tar_path.with_name(f".{tar_path.name}.tmp"), idx_path.with_name(f".{idx_path.name}.tmp")
    summary: dict[str, Any] = {"shard": task.shard, "skipped": [], "fixed": [], "manifest": []}
    lines = []
    with open(tmp_tar, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in task.samples:
            try:
                prepared = prepare(sample.path, task.max_resolution)
            except Skip as reason:
                summary["skipped"].append({"path": sample.path, "reason": str(reason)})
                tick()
                continue
            fixed = list(prepared.fixed)
            if prepared.source_format != "JPEG":
                fixed.append(f"{prepared.source_format} data re-encoded as JPEG")
            if fixed:
                summary["fixed"].append({"path": sample.path, "what": "; ".join(fixed)})
            fields = []
            for ext, payload in (("jpg", prepared.jpeg_bytes(task.jpeg_quality)), ("cls", str(sample.label).encode())):
                name = f"{sample.index:08d}.{ext}"
                fields.append(f"{ext} {_add(tar, name, payload)} {len(payload)} {name}")
            lines.append(" ".join(fields))
            width, height = prepared.size
            summary["manifest"].append([sample.index, sample.label, width, height, sample.path])
            tick()
    summary["converted"] = len(lines)
    if lines:
        tmp_idx.write_text(f"{INDEX_VERSION} {len(lines)}\n" + "".join(line + "\n" for line in lines))
        os.replace(tmp_tar, tar_path)
        os.replace(tmp_idx, idx_path)
        summary["bytes"] = tar_path.stat().st_size + idx_path.stat().st_size
    else:  # every file skipped: no empty shard for DALI to trip on
        tmp_tar.unlink()
        summary["bytes"] = 0
    write_json_atomic(done_path, summary)
    return summary


def finished_shards(out: Path) -> dict[int, dict[str, Any]]:
    """Summaries of the shards a previous (killed) run completed."""
    return {int(p.name[1:7]): json.loads(p.read_text()) for p in sorted((out / SHARDS).glob(".*.json"))}

