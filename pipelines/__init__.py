"""Multi-crop data pipelines; every backend yields ``pipelines.batch.MultiCropBatch``."""

from pipelines.dali import DALIPipeline
from pipelines.ffcv import FFCVPipeline
from pipelines.policy import MultiCropPolicy
from pipelines.torchvision import TorchvisionPipeline

# --pipeline name -> class taking (data_path, policy, batch_size, world_size, rank, seed, num_workers, device)
PIPELINES = {"torchvision": TorchvisionPipeline, "ffcv": FFCVPipeline, "dali": DALIPipeline}

__all__ = ["PIPELINES", "DALIPipeline", "FFCVPipeline", "MultiCropPolicy", "TorchvisionPipeline"]
