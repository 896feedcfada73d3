"""Re-opening a finished conversion and checking it against its report and manifest."""

import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mokd_fast.convert.output import REPORT
from pipelines.formats import BETON, INSTALL_DALI, MANIFEST, import_ffcv, read_index

SAMPLED = 64
FFCV_JPEG = 0  # RGBImageField stores mode 0 for JPEG bytes, 1 for raw pixels


def _chosen(n: int, mode: str) -> set[int]:
    """Positions to decode: all, or the first, the last and a fixed random few."""
    if mode == "all" or n <= SAMPLED:
        return set(range(n))
    return {0, n - 1, *random.Random(0).sample(range(n), SAMPLED)}


def _check_image(data: bytes, expected: list, where: str, problems: list[str]) -> None:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        problems.append(f"{where}: image does not decode ({err})")
        return
    if img.size != (expected[2], expected[3]) or img.mode != "RGB":
        problems.append(f"{where}: image is {img.size} {img.mode}, manifest says {(expected[2], expected[3])} RGB")


def _verify_dali(out: Path, report: dict, rows: dict[int, list], mode: str, problems: list[str]) -> int:
    count = 0
    for shard in report["shards"]:
        tar_path = out / shard
        idx_path = tar_path.with_suffix(".idx")
        try:
            index = read_index(idx_path)
            with tarfile.open(tar_path) as tar:
                members = {m.name: m for m in tar.getmembers()}
                data = tar_path.read_bytes()
        except (OSError, ValueError, tarfile.TarError) as err:
            problems.append(f"{shard}: cannot be read ({err})")
            continue
        chosen = _chosen(len(index), mode)
        for pos, sample in enumerate(index):
            count += 1
            (jpg_at, jpg_size, jpg_name), (cls_at, cls_size, _) = sample["jpg"], sample["cls"]
            key = int(jpg_name.split(".")[0])
            for at, size, name in (sample["jpg"], sample["cls"]):
                member = members.get(name)
                if member is None or member.offset_data != at or member.size != size:
                    problems.append(f"{shard}: index entry {name} does not match the tar")
            expected = rows.get(key)
            if expected is None:
                problems.append(f"{shard}: sample {key} is not in the manifest")
                continue
            label = data[cls_at : cls_at + cls_size].decode(errors="replace")
            if label != str(expected[1]):
                problems.append(f"{shard}: sample {key} has label {label!r}, manifest says {expected[1]}")
            if pos in chosen:
                _check_image(data[jpg_at : jpg_at + jpg_size], expected, f"{shard}:{jpg_name}", problems)
    return count


def _verify_ffcv(out: Path, rows: dict[int, list], mode: str, problems: list[str]) -> int:
    """Reads the .beton's own tables (metadata, allocation) and decodes the chosen images' stored bytes."""
    import_ffcv()
    from ffcv.reader import Reader

    path = out / BETON
    try:
        reader = Reader(str(path))
        meta, table = reader.metadata, reader.alloc_table
        raw = np.memmap(path, dtype=np.uint8, mode="r")
    except Exception as err:
        problems.append(f"{BETON}: cannot be read ({err})")
        return 0
    sizes = dict(zip(table["ptr"].tolist(), table["size"].tolist()))
    order = sorted(rows)
    chosen = _chosen(len(meta), mode)
    for pos in range(len(meta)):
        image, label, index = meta[pos]["f0"], int(meta[pos]["f1"]), int(meta[pos]["f2"])
        expected = rows[order[pos]] if pos < len(order) else None
        if expected is None or (index, label) != (expected[0], expected[1]):
            problems.append(f"sample {pos}: index/label {index}/{label}, manifest {expected}")
            continue
        if (int(image["width"]), int(image["height"])) != (expected[2], expected[3]):
            problems.append(f"sample {pos}: stored {image['width']}x{image['height']}, manifest {expected[2]}x{expected[3]}")
        if pos not in chosen:
            continue
        ptr = int(image["data_ptr"])
        if ptr not in sizes or ptr + sizes[ptr] > len(raw):
            problems.append(f"sample {pos}: image bytes outside the file")
        elif image["mode"] == FFCV_JPEG:
            _check_image(bytes(raw[ptr : ptr + sizes[ptr]]), expected, f"sample {pos}", problems)
        elif sizes[ptr] != expected[2] * expected[3] * 3:
            problems.append(f"sample {pos}: raw image of {sizes[ptr]} bytes, expected {expected[2] * expected[3] * 3}")
    return len(meta)


def verify(out: Path, mode: str) -> list[str]:
    """Problems found in ``out`` (empty when it checks out).

    Counts must match the report, every sample's label the manifest; the chosen samples (all, or a
    fixed random few with ``sample``) must decode to the recorded shape.
    """
    report_path = out / REPORT
    if not report_path.exists():
        return [f"{out} has no {REPORT}: the conversion did not finish"]
    report = json.loads(report_path.read_text())
    rows = {row[0]: row for row in map(json.loads, (out / MANIFEST).read_text().splitlines())}
    problems: list[str] = []
    if len(rows) != report["converted"]:
        problems.append(f"{MANIFEST} has {len(rows)} samples, the report says {report['converted']}")
    if report["format"] == "dali":
        count = _verify_dali(out, report, rows, mode, problems)
        try:
            dali_count = dali_pipeline(out).reader_meta("reader")["epoch_size"]
        except ImportError as err:
            print(f"verify: note: shards checked with tarfile and PIL only; {err}")
            dali_count = count
        except RuntimeError as err:
            problems.append(f"DALI cannot open the shards ({err})")
        else:
            if dali_count != count:
                problems.append(f"DALI's reader sees {dali_count} samples, the shards hold {count}")
    else:
        count = _verify_ffcv(out, rows, mode, problems)
    if count != report["converted"]:
        problems.append(f"the output holds {count} samples, the report says {report['converted']}")
    return problems


def dali_pipeline(out: Path, batch_size: int = 1) -> Any:
    """A built CPU DALI pipeline (no GPU needed) reading the shards with their indexes: (image, label).

    Raises:
        ImportError: DALI is not installed; the message says how to install it.
    """
    try:
        from nvidia.dali import fn, pipeline_def
    except ImportError as err:
        raise ImportError(f"DALI is not installed: {INSTALL_DALI}") from err
    tars = [str(out / s) for s in json.loads((out / REPORT).read_text())["shards"]]

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None)
    def read() -> Any:
        jpg, cls = fn.readers.webdataset(paths=tars, index_paths=[t[:-4] + ".idx" for t in tars], ext=["jpg", "cls"],
                                         missing_component_behavior="error", name="reader")
        return fn.decoders.image(jpg, device="cpu"), cls

    pipe = read()
    pipe.build()
    return pipe
