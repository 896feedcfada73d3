"""A generated, labelled image set where the class is a shape and everything else is nuisance.

Learning shows only on data where raw pixels and a random network do poorly, and only on data that
can be learnt at all. Each image is one of ten filled shapes at a random position and scale;
``difficulty`` sets the rest:

- 0 (the learning proof's): a solid shape, upright, at 30-90% of the image's side, over a solid
  background; both colours uniform in RGB, the shape at least 0.3 darker in luma, plus light pixel
  noise. Colour, size and place dominate the pixels (random-init neighbours match them: at 64 px a
  random ResNet-18 scores 22.5% k-NN with refreshed BatchNorm), yet the outline is the only thing an
  augmented pair shares, and a plain supervised ResNet-18 reaches 90.7% after 12,000 images.
  Upright, because no self-supervised augmentation rotates: a class that only rotation-invariant
  features tell apart could not be learnt from views; one polarity, because a free one halves what
  supervised learning reaches in that budget (docs/learning-health.md has the measurements).
- 1: a rotated shape in palette colours over two-tone textures (gradient, stripes, checks or
  blotches), sometimes a striped fill.
- 2: as 1 with random clutter (lines, dots, small quadrilaterals) on top: the set of 2026-11-30,
  on which even a supervised run stays near chance within 12k samples.

Every image is a pure function of ``(seed, split, index, difficulty)``, so a val split drawn with
another seed never repeats a train image.
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2  # drawn at twice the size, then box-filtered down: anti-aliased edges


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Unit-frame ``points`` turned by ``angle``, scaled by ``r`` and moved to ``(cx, cy)``."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (c * x - s * y), cy + r * (s * x + c * y)) for x, y in points]


def _regular(n: int, outer: float, inner: float | None = None) -> list[tuple[float, float]]:
    """A regular n-gon (or, with ``inner``, an n-pointed star) of radius ``outer``."""
    count = 2 * n if inner else n
    radii = [outer if i % 2 == 0 or inner is None else inner for i in range(count)]
    return [(radii[i] * math.sin(2 * math.pi * i / count), -radii[i] * math.cos(2 * math.pi * i / count))
            for i in range(count)]


POLYGONS: dict[str, list[list[tuple[float, float]]]] = {
    "square": [[(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)]],
    "triangle": [_regular(3, 1.0)],
    "cross": [[(-0.3, -1.0), (0.3, -1.0), (0.3, -0.3), (1.0, -0.3), (1.0, 0.3), (0.3, 0.3), (0.3, 1.0), (-0.3, 1.0),
               (-0.3, 0.3), (-1.0, 0.3), (-1.0, -0.3), (-0.3, -0.3)]],
    "star": [_regular(5, 1.0, 0.4)],
    "arrow": [[(-1.0, -0.22), (0.15, -0.22), (0.15, -0.6), (1.0, 0.0), (0.15, 0.6), (0.15, 0.22), (-1.0, 0.22)]],
    "tee": [[(-0.9, -0.85), (0.9, -0.85), (0.9, -0.45), (0.2, -0.45), (0.2, 0.95), (-0.2, 0.95), (-0.2, -0.45),
             (-0.9, -0.45)]],
    "bowtie": [[(-0.9, -0.8), (0.0, 0.0), (-0.9, 0.8)], [(0.9, -0.8), (0.0, 0.0), (0.9, 0.8)]],
}
ROUND = ("circle", "ring", "crescent")
CLASSES: tuple[str, ...] = ("arrow", "bowtie", "circle", "crescent", "cross", "ring", "square", "star", "tee",
                            "triangle")


def _disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def shape_mask(name: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """``[size, size]`` float coverage in [0, 1] of shape ``name`` centred at ``(cx, cy)`` with radius ``r`` (pixels)."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE
    if name == "circle":
        _disc(draw, cx, cy, 0.85 * r, 255)
    elif name == "ring":
        _disc(draw, cx, cy, 0.95 * r, 255)
        _disc(draw, cx, cy, 0.55 * r, 0)
    elif name == "crescent":
        _disc(draw, cx, cy, 0.95 * r, 255)
        _disc(draw, cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle), 0.8 * r, 0)
    elif name in POLYGONS:
        for poly in POLYGONS[name]:
            draw.polygon(_rotated(poly, cx, cy, r, angle), fill=255)
    else:
        raise ValueError(f"unknown shape {name!r}; the shapes are {', '.join(CLASSES)}")
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


# Eight hues; every drawn colour is one of them at a random brightness. Fully random RGB triples
# would make the colours alone tell one image from any other, a cue that survives colour jitter and
# that self-supervised objectives latch onto instead of the outline.
PALETTE = np.array([[230, 40, 40], [40, 180, 40], [40, 70, 230], [235, 210, 40], [40, 200, 210], [200, 50, 200],
                    [240, 240, 240], [70, 70, 70]], dtype=np.float32)


def _colour(rng: np.random.Generator, hue: int) -> np.ndarray:
    """Palette colour ``hue`` at a random 70-100% brightness."""
    return PALETTE[hue] * rng.uniform(0.7, 1.0)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="xy")


def _two_tone(rng: np.random.Generator, size: int, hue: int, pattern: np.ndarray) -> np.ndarray:
    """``[size, size, 3]``: palette colour ``hue`` and a 25-50% darker shade of it, mixed by ``pattern`` in [0, 1].

    Low-contrast textures keep the shape's outline the strongest edge in the image.
    """
    a = _colour(rng, hue)
    return a * (1 - rng.uniform(0.25, 0.5) * pattern[..., None])


def _stripes(rng: np.random.Generator, size: int, hue: int) -> np.ndarray:
    x, y = _grid(size)
    theta, period = rng.uniform(0, math.pi), rng.uniform(3, 12)
    wave = np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period + rng.uniform(0, 2 * math.pi))
    return _two_tone(rng, size, hue, (wave > 0).astype(np.float32))


def _gradient(rng: np.random.Generator, size: int, hue: int) -> np.ndarray:
    x, y = _grid(size)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (x * math.cos(theta) + y * math.sin(theta)) / size
    return _two_tone(rng, size, hue, (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6))


def _checks(rng: np.random.Generator, size: int, hue: int) -> np.ndarray:
    x, y = _grid(size)
    cell = rng.uniform(4, 14)
    return _two_tone(rng, size, hue, ((x // cell + y // cell) % 2).astype(np.float32))


def _blotches(rng: np.random.Generator, size: int, hue: int) -> np.ndarray:
    cells = int(rng.integers(2, 6))
    coarse = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    return _two_tone(rng, size, hue, np.clip(smooth, 0, 1))


BACKGROUNDS: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (_stripes, _gradient, _checks, _blotches)


def _clutter(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    """Draws ``count`` small lines, dots and quadrilaterals in random palette colours anywhere on ``image``."""
    draw = ImageDraw.Draw(image)
    size = image.width
    for _ in range(count):
        colour = tuple(int(c) for c in _colour(rng, int(rng.integers(len(PALETTE)))))
        x, y = rng.uniform(0, size, size=2)
        extent = rng.uniform(0.04, 0.12) * size
        kind = rng.integers(3)
        if kind == 0:
            angle = rng.uniform(0, 2 * math.pi)
            draw.line((x, y, x + 2 * extent * math.cos(angle), y + 2 * extent * math.sin(angle)), fill=colour,
                      width=int(rng.integers(1, 3)))
        elif kind == 1:
            draw.ellipse((x - extent / 2, y - extent / 2, x + extent / 2, y + extent / 2), fill=colour)
        else:
            corners = [(x + extent * math.cos(a), y + extent * math.sin(a))
                       for a in np.sort(rng.uniform(0, 2 * math.pi, size=4))]
            draw.polygon(corners, fill=colour)


DIFFICULTIES = (0, 1, 2)
MIN_LUMA_GAP = 0.3  # difficulty 0: the shape at least this much darker than the background in luma (0-1)
NOISE = 0.02  # difficulty 0: per-pixel Gaussian noise, as a fraction of the 0-255 range


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]) / 255.0)


def _plain(name: str, rng: np.random.Generator, size: int) -> Image.Image:
    """Difficulty 0: a solid upright shape, darker than its solid background, uniform RGB colours, light noise."""
    background, fill = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    while _luma(background) - _luma(fill) < MIN_LUMA_GAP:
        background, fill = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    r = rng.uniform(0.15, 0.45) * size
    cx, cy = rng.uniform(0.85 * r, size - 0.85 * r, size=2)
    mask = shape_mask(name, size, cx, cy, r, 0.0)[..., None]
    pixels = background * (1 - mask) + fill * mask + rng.normal(0, NOISE * 255, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _textured(name: str, rng: np.random.Generator, size: int, clutter: bool) -> Image.Image:
    """Difficulties 1 and 2: palette colours over a two-tone texture, with clutter on top for 2."""
    background_hue = int(rng.integers(len(PALETTE)))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))](rng, size, background_hue)
    hue = int(rng.choice([h for h in range(len(PALETTE)) if h != background_hue]))  # the outline always shows
    fill = _stripes(rng, size, hue) if rng.random() < 0.3 else np.broadcast_to(_colour(rng, hue), (size, size, 3))
    r = rng.uniform(0.22, 0.42) * size
    cx, cy = rng.uniform(0.85 * r, size - 0.85 * r, size=2)
    mask = shape_mask(name, size, cx, cy, r, rng.uniform(0, 2 * math.pi))[..., None]
    image = Image.fromarray(np.clip(background * (1 - mask) + fill * mask, 0, 255).astype(np.uint8))
    if clutter:
        _clutter(rng, image, int(rng.integers(2, 7)))
    return image


def render(name: str, rng: np.random.Generator, size: int = 64, difficulty: int = 0) -> Image.Image:
    """One ``size`` x ``size`` RGB image of shape ``name`` with every nuisance drawn from ``rng``."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty}")
    return _plain(name, rng, size) if difficulty == 0 else _textured(name, rng, size, clutter=difficulty == 2)


def write_split(folder: str | Path, per_class: int, seed: int, size: int = 64, quality: int = 92,
                difficulty: int = 0) -> Path:
    """Writes ``folder/<class>/<index>.jpg``, ``per_class`` images of each of the ten classes, drawn from ``seed``.

    Returns:
        The folder, an ImageFolder every pipeline and ``tools/convert_dataset.py`` read.
    """
    folder = Path(folder)
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng((seed, label, i))
            render(name, rng, size, difficulty).save(folder / name / f"{i:05}.jpg", quality=quality)
    return folder
