"""The multi-crop policy as batched tensor ops: every view of every image in a few kernels, CPU or CUDA.

Input is a batch of decoded images on a shared canvas (``[B, 3, Hc, Wc]`` uint8, image ``b`` in the
top-left ``heights[b] x widths[b]``), so each image is decoded once however many views it gives.
Random parameters are drawn per sample on the host from a seeded generator (a few numbers per view,
sent to the device without blocking); the pixel work is plain torch with no data-dependent shapes:

- random resized crop: one ``torchvision.ops.roi_align`` per resolution group (all views' boxes at
  once; adaptive sampling averages the source pixels under each output pixel, which anti-aliases
  down-scaling);
- flip, colour jitter (per-sample factors and per-sample random order, as torchvision's
  ``ColorJitter``), grayscale, Gaussian blur (per-sample sigma, separable grouped convolution) and
  solarize, each run only on the samples its coin selected (indices known on the host, so no sync),
  or with ``gather=False`` on the whole batch under ``torch.where`` masks (fixed shapes);
- normalisation and, if asked, channels-last.

The crop draws follow ``RandomResizedCrop.get_params`` (ten tries of area and log-aspect, then the
central fallback); the photometric ops follow torchvision's tensor implementations.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy, ViewPolicy

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
CROP_TRIES = 10


@dataclass
class ViewParams:
    """Per-sample random parameters of one view for a batch (all ``[B]`` or ``[B, k]``, on the host).

    Attributes:
        boxes: ``[B, 4]`` crop boxes ``(x1, y1, x2, y2)`` in pixel-edge coordinates.
        flip: Horizontal flip.
        jitter: Colour jitter applied.
        factors: ``[B, 4]`` brightness, contrast, saturation factors and hue shift.
        order: ``[B, 4]`` the order the four jitter ops run in.
        gray: Converted to grayscale.
        blur: Blurred.
        sigma: Blur standard deviation.
        solarize: Solarized.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor



def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low


def sample_crop_boxes(heights: torch.Tensor, widths: torch.Tensor, view: ViewPolicy, gen: torch.Generator) -> torch.Tensor:
    """``[B, 4]`` boxes drawn like ``RandomResizedCrop.get_params``, vectorised over the batch."""
    h, w = heights.double()[:, None], widths.double()[:, None]
    n = len(heights)
    area = h * w * _uniform(gen, (n, CROP_TRIES), *view.scale)
    aspect = torch.exp(_uniform(gen, (n, CROP_TRIES), math.log(view.ratio[0]), math.log(view.ratio[1])))
    cw, ch = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.double().argmax(dim=1, keepdim=True)  # the first try that fits, as the reference loop
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    top = torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * (h[:, 0] - ch + 1))
    left = torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * (w[:, 0] - cw + 1))
    # Central fallback where no try fits.
    in_ratio = w[:, 0] / h[:, 0]
    lo, hi = min(view.ratio), max(view.ratio)
    fb_w = torch.where(in_ratio > hi, torch.round(h[:, 0] * hi), w[:, 0])
    fb_h = torch.where(in_ratio < lo, torch.round(w[:, 0] / lo), h[:, 0])
    ok = fits.any(dim=1)
    cw, ch = torch.where(ok, cw, fb_w), torch.where(ok, ch, fb_h)
    top = torch.where(ok, top, torch.div(h[:, 0] - ch, 2, rounding_mode="floor"))
    left = torch.where(ok, left, torch.div(w[:, 0] - cw, 2, rounding_mode="floor"))
    return torch.stack([left, top, left + cw, top + ch], dim=1).float()


def sample_view_params(heights: torch.Tensor, widths: torch.Tensor, view: ViewPolicy, gen: torch.Generator) -> ViewParams:
    """All random parameters of one view for a batch of images of the given sizes."""
    n = len(heights)
    b, c, s, hue = view.jitter
    lows = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue], dtype=torch.float64)
    highs = torch.tensor([1 + b, 1 + c, 1 + s, hue], dtype=torch.float64)
    return ViewParams(
        boxes=sample_crop_boxes(heights, widths, view, gen),
        flip=torch.rand(n, generator=gen) < view.flip_p,
        jitter=torch.rand(n, generator=gen) <= view.jitter_p,
        factors=(lows + torch.rand((n, 4), generator=gen, dtype=torch.float64) * (highs - lows)).float(),
        order=torch.argsort(torch.rand((n, 4), generator=gen), dim=1),
        gray=torch.rand(n, generator=gen) < view.grayscale_p,
        blur=torch.rand(n, generator=gen) <= view.blur_p,
        sigma=_uniform(gen, (n,), *view.blur_sigma).float(),
        solarize=torch.rand(n, generator=gen) < view.solarize_p,
    )


def _per_sample(mask_or_value: torch.Tensor) -> torch.Tensor:
    return mask_or_value.view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` luma of ``[N, 3, H, W]`` in [0, 1]."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1.0 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factor)).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, _per_sample(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), _per_sample(factor))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates hue by ``shift`` (fraction of a turn) through HSV, as torchvision's tensor ``adjust_hue``."""
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.fmod(h + shift.view(-1, 1, 1) + 1.0, 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(-1, 1, 1)  # [N, 6, H, W]
    a1 = torch.stack((v, q, p, p, t, v), dim=1)
    a2 = torch.stack((t, v, v, q, p, p), dim=1)
    a3 = torch.stack((p, p, t, v, v, q), dim=1)
    a4 = torch.stack((a1, a2, a3), dim=1)  # [N, 3, 6, H, W]
    return torch.einsum("nijk,nxijk->nxjk", mask.to(x.dtype), a4)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The four jitter ops in each sample's own order (every op runs on the batch, masks pick)."""
    for stage in range(4):
        for op_id, op in enumerate(JITTER_OPS):
            chosen = order[:, stage] == op_id
            x = torch.where(_per_sample(chosen), op(x, factors[:, op_id]), x)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (reflect padding; kernel radius ceil(3 max_sigma))."""
    n, c, h, w = x.shape
    radius = math.ceil(3 * max_sigma)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.view(-1, 1)) ** 2)  # [N, K]
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, K]
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def _subset(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Device indices of the samples a host-side coin selected (None when none did); no host sync."""
    idx = mask.nonzero()[:, 0]
    return idx.to(device, non_blocking=True) if len(idx) else None


def make_views(
    canvas: torch.Tensor,
    params: list[ViewParams],
    views: list[ViewPolicy],
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """All views of one resolution group, view-major: ``[V * B, 3, S, S]`` normalised float.

    Args:
        canvas: ``[B, 3, Hc, Wc]`` float in [0, 1] (images top-left, sizes in the params' boxes).
        params: Per-view parameters, on the host.
        views: Per-view policies; all of one output size.
        mean: ``[1, 3, 1, 1]`` normalisation mean.
        std: ``[1, 3, 1, 1]`` normalisation std.
        channels_last: Return channels-last memory.
        gather: Run each photometric op only on the samples whose coin selected it (indices from the
            host-side parameters, so no sync). False runs every op on the whole batch and selects
            with masks: fixed shapes for ``torch.compile``, more arithmetic. Both give the same result.
    """
    device, size, batch = canvas.device, views[0].size, canvas.shape[0]
    index = torch.arange(batch, dtype=canvas.dtype)
    boxes = torch.cat([torch.cat([index[:, None], p.boxes.to(canvas.dtype)], dim=1) for p in params])  # [V*B, 5]
    x = roi_align(canvas, boxes.to(device, non_blocking=True), (size, size), spatial_scale=1.0, sampling_ratio=-1,
                  aligned=True).clamp_(0.0, 1.0)

    def cat(name: str) -> torch.Tensor:  # one field of every view, [V*B, ...], on the host
        return torch.cat([getattr(p, name) for p in params])

    def apply(mask: torch.Tensor, op, *args: torch.Tensor) -> None:
        """x <- op(x) where the host-side ``mask`` is set."""
        nonlocal x
        if gather:
            idx = _subset(mask, device)
            if idx is not None:
                x[idx] = op(x[idx], *[a[mask].to(device, non_blocking=True) for a in args])
        else:
            on = _per_sample(mask.to(device, non_blocking=True))
            x = torch.where(on, op(x, *[a.to(device, non_blocking=True) for a in args]), x)

    apply(cat("flip"), lambda t: t.flip(-1))
    jitter, factors, order = cat("jitter"), cat("factors"), cat("order")
    for stage in range(4):  # each sample's own order of the four ops, as torchvision's ColorJitter
        for op_id, op in enumerate(JITTER_OPS):
            apply(jitter & (order[:, stage] == op_id), op, factors[:, op_id])
    apply(cat("gray"), lambda t: grayscale(t).expand_as(t))
    if any(v.blur_p > 0 for v in views):
        max_sigma = max(v.blur_sigma[1] for v in views)
        apply(cat("blur"), lambda t, sigma: gaussian_blur(t, sigma, max_sigma), cat("sigma"))
    if any(v.solarize_p > 0 for v in views):
        threshold = views[0].solarize_threshold / 255.0
        apply(cat("solarize"), lambda t: torch.where(t >= threshold, 1.0 - t, t))
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _replicate_edges(x: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> None:
    """Copies each image's last column and row one pixel outward, in place.

    Bilinear samples near a crop's right or bottom edge (when a crop is enlarged) reach half a pixel
    beyond the image; on a shared canvas that pixel belongs to nobody, so it is made a copy of the
    image's edge, which is how a per-image resize treats its border.
    """
    batch, _, canvas_h, canvas_w = x.shape
    rows = torch.arange(batch, device=x.device)
    col = widths.clamp(max=canvas_w - 1)
    x[rows, :, :, col] = x[rows, :, :, col - (widths < canvas_w).long()]
    row = heights.clamp(max=canvas_h - 1)
    x[rows, :, row, :] = x[rows, :, row - (heights < canvas_h).long(), :]


class BatchedMultiCrop:
    """Every view of a batch of decoded images: ``MultiCropBatch`` on the canvas's device.

    Args:
        policy: The multi-crop policy.
        device: Where the views are made.
        channels_last: Deliver channels-last crops.
        gather: See ``make_views`` (speed switch; False is the compile-friendly masked form).
    """

    def __init__(self, policy: MultiCropPolicy, device: torch.device, channels_last: bool = False,
                 gather: bool = True) -> None:
        self.policy = policy
        self.views = policy.views()
        self.device = device
        self.channels_last = channels_last
        self.gather = gather
        self.mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(policy.std, device=device).view(1, 3, 1, 1)

    def __call__(self, canvas: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                 gen: torch.Generator) -> MultiCropBatch:
        """``canvas`` ``[B, 3, Hc, Wc]`` uint8 on the device; ``heights``/``widths`` ``[B]`` on the host."""
        params = [sample_view_params(heights, widths, v, gen) for v in self.views]
        x = canvas.float().div_(255.0)
        _replicate_edges(x, heights.to(self.device, non_blocking=True), widths.to(self.device, non_blocking=True))
        groups = [make_views(x, params[s], self.views[s], self.mean, self.std, self.channels_last, self.gather)
                  for s in (slice(0, 2), slice(2, None))]
        return MultiCropBatch(*groups)
