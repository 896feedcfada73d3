"""Multi-crop data pipelines; every backend yields ``pipelines.batch.MultiCropBatch``."""
