"""Real photographs shipped inside scikit-image, for demos and tests that must run offline."""

import numpy as np
import torch
from PIL import Image
from skimage import data
from torchvision.transforms import v2

# Photographs bundled with scikit-image's wheel (no download), of varied sizes and content.
PHOTO_NAMES = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_photos() -> dict[str, Image.Image]:
    """The bundled photographs as RGB PIL images (grayscale ones replicated to three channels)."""
    photos = {}
    for name in PHOTO_NAMES:
        array = np.asarray(getattr(data, name)())
        photos[name] = Image.fromarray(array).convert("RGB")
    return photos


def random_multicrop(
    images: list[Image.Image],
    n_local: int,
    global_size: int,
    local_size: int,
    global_scale: tuple[float, float] = (0.25, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.25),
) -> list[torch.Tensor]:
    """Random resized crops and flips of each image: 2 global then ``n_local`` local ``[B, 3, S, S]``.

    A light augmentation for quick checks on real images; training uses the pipelines in
    ``pipelines/``, which apply the full MOKD policy.
    """
    normalize = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    make_global = v2.Compose([v2.RandomResizedCrop(global_size, scale=global_scale, antialias=True), v2.RandomHorizontalFlip(), normalize])
    make_local = v2.Compose([v2.RandomResizedCrop(local_size, scale=local_scale, antialias=True), v2.RandomHorizontalFlip(), normalize])
    views = [torch.stack([make_global(im) for im in images]) for _ in range(2)]
    views += [torch.stack([make_local(im) for im in images]) for _ in range(n_local)]
    return views
