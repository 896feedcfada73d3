"""The on-disk contract between ``tools/convert_dataset.py`` (the writer) and the pipelines and evaluations (the readers).

It lives here, in the lower layer, so the pipelines read converted data without importing the
converter: ``mokd_fast`` depends on ``pipelines``, never the other way round.
"""

import json
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError

MANIFEST = "manifest.jsonl"  # one [index, label, width, height, source path] per converted sample
CLASSES = "classes.json"  # {class name: index}, as torchvision's ImageFolder.class_to_idx
BETON = "train.beton"  # the FFCV file inside a converter output folder
INDEX_VERSION = "v1.2"  # DALI's webdataset index format, one .idx per shard
INSTALL_DALI = "pip install nvidia-dali-cuda130 (the CUDA 13 build, matching the torch wheel)"
INSTALL_FFCV = (
    "ffcv is not installed. Install it with: apt-get install -y libturbojpeg0-dev libopencv-dev pkg-config "
    "&& pip install --no-deps ffcv==1.0.2 terminaltables pytorch_pfn_extras fastargs assertpy psutil numba "
    "opencv-python-headless (./run.sh test does both)"
)


def import_ffcv() -> Any:
    """The ffcv module, or a UsageError that says how to install it."""
    try:
        import ffcv
        import ffcv.fields
        import ffcv.writer
    except ImportError as err:
        raise UsageError(f"{INSTALL_FFCV} ({err})") from err
    return ffcv


def manifest_labels(folder: Path) -> list[int]:
    """The class of every converted sample in index order, from the conversion's manifest.

    Raises:
        UsageError: The manifest is missing or malformed, or its indices are not 0..N-1.
    """
    path = folder / MANIFEST
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        labels = dict((int(row[0]), int(row[1])) for row in rows)
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise UsageError(f"cannot read the labels of {folder} from {path} ({err}); re-run tools/convert_dataset.py") from err
    if sorted(labels) != list(range(len(labels))):
        raise UsageError(f"{path}: sample indices are not 0..{len(labels) - 1}; re-run tools/convert_dataset.py")
    return [labels[i] for i in range(len(labels))]


def read_index(path: Path) -> list[dict[str, tuple[int, int, str]]]:
    """Parses a v1.2 index: per sample, ``{ext: (offset, size, member name)}``.

    Raises:
        ValueError: The header or a line is malformed, or the count disagrees with the header.
    """
    lines = path.read_text().splitlines()
    if not lines or lines[0].split()[0] != INDEX_VERSION:
        raise ValueError(f"{path}: not a DALI {INDEX_VERSION} index")
    samples = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) % 4:
            raise ValueError(f"{path}: malformed line {line!r}")
        samples.append({parts[i]: (int(parts[i + 1]), int(parts[i + 2]), parts[i + 3]) for i in range(0, len(parts), 4)})
    if len(samples) != int(lines[0].split()[1]):
        raise ValueError(f"{path}: header says {lines[0].split()[1]} samples, found {len(samples)}")
    return samples
