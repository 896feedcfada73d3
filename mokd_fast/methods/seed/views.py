"""SEED's views (official ``tools/utils.py``): one view student and teacher share, plus optional small patches.

``mocov2_aug`` and ``swav_aug`` differ only in the crop's area range (0.2-1 and 0.14-1); both are a
bilinear RandomResizedCrop with ratio 3/4-4/3, colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8,
grayscale p 0.2, Gaussian blur (sigma 0.1-2) with p 0.5, horizontal flip, ImageNet normalisation;
no solarisation. ``swav_small_aug`` is the same at 96 px with area 0.05-0.14. The official flip comes
last; it commutes with the photometric operations, so the pipelines' order gives the same views.
"""

from mokd_fast.methods.common.views import moco_v2_view
from pipelines.policy import MultiCropPolicy, ViewPolicy

GLOBAL_SCALES = {"mocov2": (0.2, 1.0), "swav": (0.14, 1.0)}


def seed_view(size: int, scale: tuple[float, float]) -> ViewPolicy:
    """One view of the official SEED transforms: MoCo v2's."""
    return moco_v2_view(size, scale)


def seed_policy(recipe: str, global_size: int = 224, global_scale: tuple[float, float] | None = None,
                local_crops_number: int = 0, local_size: int = 96,
                local_scale: tuple[float, float] = (0.05, 0.14)) -> MultiCropPolicy:
    """One global view (``recipe``: mocov2 or swav) and ``local_crops_number`` small patches."""
    if recipe not in GLOBAL_SCALES:
        raise ValueError(f"SEED augmentation {recipe!r}: choose one of {tuple(GLOBAL_SCALES)}")
    view = seed_view(global_size, global_scale or GLOBAL_SCALES[recipe])
    return MultiCropPolicy((view,), seed_view(local_size, local_scale), local_crops_number)
