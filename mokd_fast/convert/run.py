"""One conversion, from source listing to report.json (the mark of a complete output)."""

import json
import os
import time
from pathlib import Path
from typing import Any

from mokd_fast.convert import dali_shards, ffcv_beton
from mokd_fast.convert.output import REPORT, STATE, open_output, write_json_atomic
from mokd_fast.convert.parallel import run_tasks
from mokd_fast.convert.sources import list_source
from pipelines.formats import BETON, CLASSES, MANIFEST, import_ffcv

SCAN_CHUNK = 256


def _chunks(samples: list, size: int) -> list[tuple]:
    return [tuple(samples[i : i + size]) for i in range(0, len(samples), size)]


def _convert_dali(out: Path, chunks: list[tuple], options: dict[str, Any], workers: int) -> tuple[list[dict], dict]:
    (out / dali_shards.SHARDS).mkdir(exist_ok=True)
    done = dali_shards.finished_shards(out)
    todo = [dali_shards.ShardTask(i, c, str(out), options["max_resolution"], options["jpeg_quality"])
            for i, c in enumerate(chunks) if i not in done]
    total = sum(len(c) for c in chunks)
    initial = total - sum(len(t.samples) for t in todo)
    for summary in run_tasks(dali_shards.write_shard, todo, workers, total, "dali shards", initial):
        done[summary["shard"]] = summary
    parts = [done[i] for i in sorted(done)]
    shards = [f"{dali_shards.SHARDS}/{p['shard']:06d}.tar" for p in parts if p["converted"]]
    return parts, {"shards": shards, "bytes": sum(p["bytes"] for p in parts)}


def _convert_ffcv(out: Path, chunks: list[tuple], options: dict[str, Any], workers: int) -> tuple[list[dict], dict]:
    done = ffcv_beton.finished_chunks(out)
    todo = [ffcv_beton.ScanTask(i, c, options["max_resolution"]) for i, c in enumerate(chunks) if i not in done]
    total = sum(len(c) for c in chunks)
    initial = total - sum(len(t.samples) for t in todo)
    with open(out / ffcv_beton.SCAN, "a") as scan_log:
        for result in run_tasks(ffcv_beton.scan_chunk, todo, workers, total, "scan", initial):
            scan_log.write(json.dumps(result) + "\n")
            scan_log.flush()
            done[result["chunk"]] = result
    parts = [done[i] for i in sorted(done)]
    rows = [row for p in parts for row in p["manifest"]]
    if not rows:
        return parts, {"files": [], "bytes": 0}
    beton = ffcv_beton.write_beton(out, rows, options, workers)
    return parts, {"files": [BETON], "bytes": beton.stat().st_size}


def convert(src: str, out: Path, fmt: str, options: dict[str, Any], workers: int, resume: bool,
            limit: int | None) -> dict[str, Any]:
    """Converts ``src`` into ``out`` and returns the report (also written as ``out/report.json``).

    Raises:
        UsageError: Bad source or output folder, or a format library is missing.
    """
    start = time.perf_counter()
    if fmt == "ffcv":
        import_ffcv()  # before anything is written to OUT
    samples, classes = list_source(src)
    if limit:
        samples = samples[:limit]
    settings = {"format": fmt, "source": str(Path(src).resolve()), "limit": limit, "options": options}
    open_output(out, settings, resume)
    size = options["shard_size"] if fmt == "dali" else SCAN_CHUNK
    convert_fn = _convert_dali if fmt == "dali" else _convert_ffcv
    parts, written = convert_fn(out, _chunks(samples, size), options, workers)
    rows = sorted((row for p in parts for row in p["manifest"]), key=lambda r: r[0])
    with open(out / f".{MANIFEST}.tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(out / f".{MANIFEST}.tmp", out / MANIFEST)
    write_json_atomic(out / CLASSES, {name: i for i, name in enumerate(classes)})
    report = {
        "format": fmt, "source": settings["source"], "converted": len(rows),
        "skipped": [s for p in parts for s in p["skipped"]], "fixed": [f for p in parts for f in p["fixed"]],
        "classes": len(classes), "bytes": written["bytes"], "seconds": round(time.perf_counter() - start, 2),
        "options": {**options, "workers": workers, "limit": limit}, **written,
    }
    if report["converted"]:
        write_json_atomic(out / REPORT, report)
        for leftover in (out / STATE, out / ffcv_beton.SCAN, *(out / dali_shards.SHARDS).glob(".*.json")):
            leftover.unlink(missing_ok=True)  # resume state, useless once report.json marks the output complete
    return report
