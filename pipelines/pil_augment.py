"""The multi-crop policy applied to a PIL image, every random draw taken from an explicit generator.

The draws follow torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``, ``RandomApply(ColorJitter)``
and ``RandomGrayscale`` and the official ``GaussianBlur``/``Solarization`` (same distributions, same
order of operations), but come from a ``torch.Generator`` seeded per sample rather than from the
worker's global state. That makes a sample's views a function of (seed, rank, epoch, index) alone,
whatever worker decodes it, which is what lets a run resume mid-epoch and reproduce exactly.
"""

import math

import torch
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

from pipelines.policy import MultiCropPolicy, ViewPolicy

INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return torch.empty(1).uniform_(low, high, generator=gen).item()


def _rand(gen: torch.Generator) -> float:
    return torch.rand(1, generator=gen).item()


def crop_box(width: int, height: int, view: ViewPolicy, gen: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random resized crop, as ``RandomResizedCrop.get_params``."""
    area = height * width
    log_lo, log_hi = math.log(view.ratio[0]), math.log(view.ratio[1])
    for _ in range(10):
        target_area = area * _uniform(gen, *view.scale)
        aspect = math.exp(_uniform(gen, log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(view.ratio):
        w, h = width, round(width / min(view.ratio))
    elif in_ratio > max(view.ratio):
        w, h = round(height * max(view.ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _color_jitter(img: Image.Image, strengths: tuple[float, float, float, float], gen: torch.Generator) -> Image.Image:
    brightness, contrast, saturation, hue = strengths
    order = torch.randperm(4, generator=gen).tolist()
    factors = (
        _uniform(gen, max(0.0, 1 - brightness), 1 + brightness),
        _uniform(gen, max(0.0, 1 - contrast), 1 + contrast),
        _uniform(gen, max(0.0, 1 - saturation), 1 + saturation),
        _uniform(gen, -hue, hue),
    )
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    for i in order:
        img = ops[i](img, factors[i])
    return img


def augment_view(img: Image.Image, view: ViewPolicy, gen: torch.Generator) -> torch.Tensor:
    """One view of an RGB image as a ``[3, size, size]`` uint8 tensor (normalisation happens on device)."""
    top, left, h, w = crop_box(img.width, img.height, view, gen)
    out = F.resized_crop(img, top, left, h, w, [view.size, view.size], INTERPOLATIONS[view.interpolation])
    if _rand(gen) < view.flip_p:
        out = F.hflip(out)
    if view.grayscale_before_jitter and _rand(gen) < view.grayscale_p:
        out = F.rgb_to_grayscale(out, num_output_channels=3)
    if _rand(gen) <= view.jitter_p:
        out = _color_jitter(out, view.jitter, gen)
    if not view.grayscale_before_jitter and _rand(gen) < view.grayscale_p:
        out = F.rgb_to_grayscale(out, num_output_channels=3)
    if view.extra_grayscale_p > 0 and _rand(gen) < view.extra_grayscale_p:
        out = F.rgb_to_grayscale(out, num_output_channels=3)
    if _rand(gen) <= view.blur_p:
        out = out.filter(ImageFilter.GaussianBlur(radius=_uniform(gen, *view.blur_sigma)))
    if view.solarize_p > 0 and _rand(gen) < view.solarize_p:
        out = ImageOps.solarize(out, threshold=view.solarize_threshold)
    return F.pil_to_tensor(out)


def augment_image(img: Image.Image, policy: MultiCropPolicy, gen: torch.Generator) -> list[torch.Tensor]:
    """All views of one image in policy order (global 1, global 2, locals), uint8 ``[3, S, S]`` each."""
    return [augment_view(img, view, gen) for view in policy.views()]
