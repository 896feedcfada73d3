"""Multi-crop data pipelines; every backend yields ``pipelines.batch.MultiCropBatch``.

The registry is lazy: ``import pipelines`` (as ``train.py --help`` and the configs do) loads no
backend, so neither torch nor DALI nor FFCV; ``PIPELINES[name]`` imports that one backend.
"""

import importlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.policy import MultiCropPolicy

if TYPE_CHECKING:
    import torch

# --pipeline name -> (module, class, what it reads: an ImageFolder or a converter --format). The class
# takes (data_path, policy, batch_size, world_size, rank, seed, num_workers, device, ...) and yields
# MultiCropBatch es from ``epoch(epoch, start_batch)``; ``len()`` is the batches per epoch on every rank.
BACKENDS = {
    "torchvision": ("pipelines.torchvision", "TorchvisionPipeline", "imagefolder"),
    "ffcv": ("pipelines.ffcv", "FFCVPipeline", "ffcv"),
    "dali": ("pipelines.dali", "DALIPipeline", "dali"),
    "nvjpeg": ("pipelines.nvjpeg", "NvJPEGPipeline", "dali"),
}


class _Registry(Mapping):
    """``{name: backend class}``, each class imported when it is first looked up."""

    def __getitem__(self, name: str) -> type:
        module, cls, _ = BACKENDS[name]
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(BACKENDS)

    def __len__(self) -> int:
        return len(BACKENDS)


PIPELINES = _Registry()

__all__ = ["BACKENDS", "PIPELINES", "MultiCropPolicy", "resolve_pipeline"]


def _dali_importable() -> bool:
    try:
        importlib.import_module("nvidia.dali")
    except ImportError:
        return False
    return True


def resolve_pipeline(name: str, data_path: str, device: "torch.device | None" = None) -> tuple[str, str]:
    """``(pipeline, data path)`` for ``--pipeline auto``: the fast backend the data was converted for.

    A ``.beton`` (or a converter folder holding one) reads with FFCV, anything that is not a
    converter output is taken as an ImageFolder for the torchvision reference. A converter folder of
    shards reads with DALI; on a CUDA ``device`` where DALI does not import, with the nvjpeg backend
    instead, which decodes the same shards with torchvision's nvJPEG bindings, so a cluster without
    DALI still decodes on the GPU. On CPU (``device`` None or a CPU device) shards pick DALI, as
    before the nvjpeg backend existed (a missing DALI is then reported with its install command). A
    named pipeline is returned as given.
    """
    if name != "auto":
        return name, data_path
    path = Path(data_path)
    if path.suffix == ".beton":
        return "ffcv", data_path
    report = path / "report.json"
    if report.is_file():
        fmt = json.loads(report.read_text()).get("format")
        if fmt == "ffcv":
            return "ffcv", str(path / "train.beton")
        if fmt == "dali":
            gpu = device is not None and device.type == "cuda"
            return ("nvjpeg" if gpu and not _dali_importable() else "dali"), data_path
    return "torchvision", data_path
