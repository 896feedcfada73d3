"""Multi-crop data pipelines; every backend yields ``pipelines.batch.MultiCropBatch``."""

import json
from pathlib import Path

from pipelines.dali import DALIPipeline
from pipelines.ffcv import FFCVPipeline
from pipelines.policy import MultiCropPolicy
from pipelines.torchvision import TorchvisionPipeline

# --pipeline name -> class taking (data_path, policy, batch_size, world_size, rank, seed, num_workers, device)
PIPELINES = {"torchvision": TorchvisionPipeline, "ffcv": FFCVPipeline, "dali": DALIPipeline}

__all__ = ["PIPELINES", "DALIPipeline", "FFCVPipeline", "MultiCropPolicy", "TorchvisionPipeline", "resolve_pipeline"]


def resolve_pipeline(name: str, data_path: str) -> tuple[str, str]:
    """``(pipeline, data path)`` for ``--pipeline auto``: the fast backend the data was converted for.

    A ``.beton`` (or a converter folder holding one) reads with FFCV, a converter folder of shards
    with DALI, anything else is taken as an ImageFolder for the torchvision reference. A named
    pipeline is returned as given.
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
            return "dali", data_path
    return "torchvision", data_path
