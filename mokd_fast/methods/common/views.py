"""Views several methods share: the MoCo v2 augmentation, which SEED, MCL-MoCo (``--aug_plus``) use.

Bilinear RandomResizedCrop (ratio 3/4-4/3), colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale
p 0.2, Gaussian blur (sigma 0.1-2) with p 0.5, horizontal flip, no solarisation; ImageNet normalisation.
"""

from pipelines.policy import ViewPolicy


def moco_v2_view(size: int, scale: tuple[float, float]) -> ViewPolicy:
    """One MoCo v2 view of ``size`` pixels cropped from ``scale`` of the image's area."""
    return ViewPolicy(size, tuple(scale), interpolation="bilinear", flip_p=0.5, jitter=(0.4, 0.4, 0.4, 0.1),
                      jitter_p=0.8, grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0), solarize_p=0.0)
