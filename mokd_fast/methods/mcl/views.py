"""MCL-MoCo's views (official ``main_moco_mcl.py``): two views per image, view 0 for every query encoder, view 1 for every key encoder.

MoCo v1 (the default): bilinear RandomResizedCrop (scale 0.2-1), RandomGrayscale 0.2, then
ColorJitter (0.4, 0.4, 0.4, 0.4) always, flip. MoCo v2 (``--aug_plus``): jitter (0.4, 0.4, 0.4,
0.1) with p 0.8, grayscale 0.2, Gaussian blur (sigma 0.1-2) p 0.5, flip. ImageNet normalisation.
"""

from mokd_fast.methods.common.views import moco_v2_view
from pipelines.policy import MultiCropPolicy, ViewPolicy


def mcl_view(size: int, scale: tuple[float, float], aug_plus: bool) -> ViewPolicy:
    """One view of MoCo v1 (official default) or MoCo v2 (``aug_plus``)."""
    if aug_plus:
        return moco_v2_view(size, scale)
    return ViewPolicy(size, tuple(scale), interpolation="bilinear", flip_p=0.5, jitter=(0.4, 0.4, 0.4, 0.4),
                      jitter_p=1.0, grayscale_p=0.2, grayscale_before_jitter=True, blur_p=0.0, solarize_p=0.0)


def mcl_policy(size: int = 224, scale: tuple[float, float] = (0.2, 1.0), aug_plus: bool = False) -> MultiCropPolicy:
    """Two same-recipe global views (queries, keys), no local view."""
    view = mcl_view(size, scale, aug_plus)
    return MultiCropPolicy((view, view), view, local_crops_number=0)
