"""Real photographs shipped inside scikit-image, for demos and tests that must run offline."""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

# Photographs bundled with scikit-image's wheel (no download), of varied sizes and content.
PHOTO_NAMES = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel",
)


def sample_photos() -> dict[str, Image.Image]:
    """The bundled photographs as RGB PIL images (grayscale ones replicated to three channels)."""
    photos = {}
    for name in PHOTO_NAMES:
        array = np.asarray(getattr(data, name)())
        photos[name] = Image.fromarray(array).convert("RGB")
    return photos


def write_image_folder(
    root: str | Path, images_per_class: int = 12, classes: int = len(PHOTO_NAMES), seed: int = 0
) -> Path:
    """Writes an ImageFolder of real JPEGs: one class per bundled photograph, varied crops and sizes.

    Each image is a random crop (30-100% of the photo's area, aspect 3/4..4/3) resized so its shorter
    side is 64-320 pixels, saved as JPEG (quality 90), so a pipeline meets real decoding, odd sizes
    and both orientations.

    Args:
        root: Folder to create (``root/<photo>/<photo>_<i>.jpg``); existing files are overwritten.
        images_per_class: Images written per class.
        classes: How many of the bundled photographs become classes (at most ``len(PHOTO_NAMES)``).
        seed: Seed of the crops and sizes.

    Returns:
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    for name in PHOTO_NAMES[:classes]:
        photo = photos[name]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            area = rng.uniform(0.3, 1.0) * photo.width * photo.height
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w = min(photo.width, round(np.sqrt(area * aspect)))
            h = min(photo.height, round(np.sqrt(area / aspect)))
            left = int(rng.integers(0, photo.width - w + 1))
            top = int(rng.integers(0, photo.height - h + 1))
            short = int(rng.integers(64, 321))
            scale = short / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            crop = photo.crop((left, top, left + w, top + h)).resize(size, Image.Resampling.BICUBIC)
            crop.save(root / name / f"{name}_{i:03d}.jpg", quality=90)
    return root
