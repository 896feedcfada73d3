"""Multi-crop data pipelines; every backend yields ``pipelines.batch.MultiCropBatch``."""

import importlib
import json
from pathlib import Path

import torch

from pipelines.dali import DALIPipeline
from pipelines.ffcv import FFCVPipeline
from pipelines.nvjpeg import NvJPEGPipeline
from pipelines.policy import MultiCropPolicy
from pipelines.torchvision import TorchvisionPipeline

# --pipeline name -> class taking (data_path, policy, batch_size, world_size, rank, seed, num_workers, device)
PIPELINES = {"torchvision": TorchvisionPipeline, "ffcv": FFCVPipeline, "dali": DALIPipeline, "nvjpeg": NvJPEGPipeline}

__all__ = ["PIPELINES", "DALIPipeline", "FFCVPipeline", "MultiCropPolicy", "NvJPEGPipeline", "TorchvisionPipeline",
           "resolve_pipeline"]


def _dali_importable() -> bool:
    try:
        importlib.import_module("nvidia.dali")
    except ImportError:
        return False
    return True


def resolve_pipeline(name: str, data_path: str, device: torch.device | None = None) -> tuple[str, str]:
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
