"""The multi-crop policy as batched tensor ops: every view of every image in a few kernels, CPU or CUDA.

Input is a batch of decoded images on a shared canvas (``[B, 3, Hc, Wc]`` uint8, image ``b`` in the
top-left ``heights[b] x widths[b]``), so each image is decoded once however many views it gives.
Random parameters are drawn per sample on the host from a seeded generator (a few numbers per view,
sent to the device without blocking); the pixel work is plain torch and never waits on the device:

- random resized crop: one ``torchvision.ops.roi_align`` per resolution group (all views' boxes at
  once; adaptive sampling averages the source pixels under each output pixel, which anti-aliases
  down-scaling), or, the CPU default, a per-crop antialiased uint8 resize with the policy's filter
  (``crop_resize``: measured faster there, and within one grey level of the reference);
- flip, colour jitter (per-sample factors and per-sample random order, as torchvision's
  ``ColorJitter``), grayscale, Gaussian blur (per-sample sigma, truncated at ceil(3 sigma); separable
  grouped convolution, one per kernel size) and solarize, each run only on the samples its coin selected (indices known on the host, so no sync),
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
from pipelines.policy import RESAMPLERS, MultiCropPolicy, ViewPolicy

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
        gray2: Converted to grayscale a second time (``extra_grayscale_p``; all False when it is 0).
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
    gray2: torch.Tensor
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
        # Drawn only when used, so policies without it keep their random stream.
        gray2=torch.rand(n, generator=gen) < view.extra_grayscale_p if view.extra_grayscale_p > 0
        else torch.zeros(n, dtype=torch.bool),
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
    """Rotates hue by ``shift`` (fraction of a turn) in HSV, as torchvision's tensor ``adjust_hue``.

    The same sector formulas as torchvision, in closed form: with ``c = max - min`` and ``h6`` the
    rotated hue in sixths of a turn, each output channel is ``max - c clamp(min(k, 4 - k), 0, 1)``
    for ``k = (n + h6) mod 6`` and ``n = 5, 3, 1`` (R, G, B), since ``v s = c``. This avoids the
    ``[N, 3, 6, H, W]`` table and the divisions by ``v``, which made hue the costliest jitter op.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # [N, H, W]
    cr = maxc - torch.minimum(torch.minimum(r, g), b)
    divisor = torch.where(cr == 0, torch.ones_like(cr), cr)
    h6 = torch.where(maxc == r, (g - b) / divisor,
                     torch.where(maxc == g, (b - r) / divisor + 2.0, (r - g) / divisor + 4.0))
    h6 = h6.add_(6.0 * shift.view(-1, 1, 1)).unsqueeze(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(h6 + n, 6.0)  # [N, 3, H, W]
    sector = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return (maxc.unsqueeze(1) - cr.unsqueeze(1) * sector).clamp_(0.0, 1.0)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The four jitter ops in each sample's own order (every op runs on the batch, masks pick)."""
    for stage in range(4):
        for op_id, op in enumerate(JITTER_OPS):
            chosen = order[:, stage] == op_id
            x = torch.where(_per_sample(chosen), op(x, factors[:, op_id]), x)
    return x


def blur_radius(sigma: torch.Tensor) -> torch.Tensor:
    """Kernel radius ``ceil(3 sigma)`` per sample: where the Gaussian is truncated (as DALI and OpenCV do)."""
    return torch.ceil(3 * sigma).long()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample, truncated at ``blur_radius(sigma)``, reflect padding.

    Args:
        x: ``[N, C, H, W]`` float.
        sigma: ``[N]`` standard deviations.
        radius: Kernel radius of the convolution, at least every sample's ``blur_radius``; taps
            beyond a sample's own radius get weight 0, so any larger radius gives the same result.
    """
    n, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.view(-1, 1)) ** 2)  # [N, K]
    kernel = kernel * (offsets.abs() <= blur_radius(sigma).view(-1, 1))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, K]
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def _subset(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Device indices of the samples a host-side coin selected (None when none did); no host sync."""
    idx = mask.nonzero()[:, 0]
    return idx.to(device, non_blocking=True) if len(idx) else None


def crop_roi_align(canvas: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, S, S]`` float crops in one ``roi_align`` call (one kernel on CUDA).

    Args:
        canvas: ``[B, 3, Hc, Wc]`` float in [0, 1] with each image's edges replicated (``_replicate_edges``).
        boxes: ``[N, 5]`` rows ``(image index, x1, y1, x2, y2)`` on the host.
        size: Output side S.
    """
    rois = boxes.to(canvas.device, canvas.dtype, non_blocking=True)
    return roi_align(canvas, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True).clamp_(0.0, 1.0)


def crop_resize(canvas: torch.Tensor, boxes: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``[N, 3, S, S]`` float crops, each an antialiased ``interpolate`` of its uint8 region.

    On CPU, uint8 channels-last input takes torch's vectorised resize (the one torchvision's v2
    ``resized_crop`` uses, made to match PIL), so this costs a fraction of ``crop_roi_align`` and
    never converts the canvas to float; on CUDA it is one launch per crop, hence not the default there.

    Args:
        canvas: ``[B, 3, Hc, Wc]`` uint8 (channels-last memory is the fast case).
        boxes: ``[N, 5]`` rows ``(image index, x1, y1, x2, y2)`` of whole pixels, on the host.
        size: Output side S.
        mode: "bicubic" or "bilinear".
    """
    crops = [F.interpolate(canvas[i : i + 1, :, y1:y2, x1:x2], size=(size, size), mode=mode, antialias=True)
             for i, x1, y1, x2, y2 in boxes.long().tolist()]
    return torch.cat(crops).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def make_views(
    x: torch.Tensor,
    params: list[ViewParams],
    views: list[ViewPolicy],
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """The photometric ops and normalisation of one resolution group's crops, in place where possible.

    Args:
        x: ``[V * B, 3, S, S]`` float crops in [0, 1], view-major (from ``crop_roi_align`` or ``crop_resize``).
        params: Per-view parameters, on the host.
        views: Per-view policies; all of one output size.
        mean: ``[1, 3, 1, 1]`` normalisation mean.
        std: ``[1, 3, 1, 1]`` normalisation std.
        channels_last: Return channels-last memory.
        gather: Run each photometric op only on the samples whose coin selected it (indices from the
            host-side parameters, so no sync). False runs every op on the whole batch and selects
            with masks: fixed shapes for ``torch.compile``, more arithmetic. Both give the same result.

    Returns:
        ``[V * B, 3, S, S]`` normalised float.
    """
    device = x.device

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

    def gray(t: torch.Tensor) -> torch.Tensor:
        return grayscale(t).expand_as(t)

    batch = len(params[0].flip)
    first = torch.tensor([v.grayscale_before_jitter for v in views]).repeat_interleave(batch)  # [V*B], per view
    apply(cat("flip"), lambda t: t.flip(-1))
    if first.any():  # trace-time: the masked form (gather=False) would otherwise run an unused op
        apply(cat("gray") & first, gray)
    jitter, factors, order = cat("jitter"), cat("factors"), cat("order")
    for stage in range(4):  # each sample's own order of the four ops, as torchvision's ColorJitter
        for op_id, op in enumerate(JITTER_OPS):
            apply(jitter & (order[:, stage] == op_id), op, factors[:, op_id])
    apply(cat("gray") & ~first, gray)
    if any(v.extra_grayscale_p > 0 for v in views):
        apply(cat("gray2"), gray)
    if any(v.blur_p > 0 for v in views):
        blur, sigma = cat("blur"), cat("sigma")
        radius = blur_radius(sigma)
        if gather:  # one convolution per kernel size: a third of the taps of the widest kernel on average
            for r in radius[blur].unique().tolist():
                apply(blur & (radius == r), lambda t, s, r=r: gaussian_blur(t, s, r), sigma)
        else:
            widest = int(blur_radius(torch.tensor(max(v.blur_sigma[1] for v in views))))
            apply(blur, lambda t, s: gaussian_blur(t, s, widest), sigma)
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
        resampler: "roi_align" (one kernel per resolution group; bilinear with area averaging),
            "resize" (per-crop antialiased uint8 resize with the policy's filter; measured several
            times faster on CPU) or "auto" (resize on CPU, roi_align elsewhere).
    """

    def __init__(self, policy: MultiCropPolicy, device: torch.device, channels_last: bool = False,
                 gather: bool = True, resampler: str = "auto") -> None:
        if resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
        self.policy = policy
        self.views = policy.views()
        self.device = device
        self.channels_last = channels_last
        self.gather = gather
        self.resampler = ("resize" if device.type == "cpu" else "roi_align") if resampler == "auto" else resampler
        self.mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(policy.std, device=device).view(1, 3, 1, 1)

    def __call__(self, canvas: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                 gen: torch.Generator) -> MultiCropBatch:
        """``canvas`` ``[B, 3, Hc, Wc]`` uint8 on the device; ``heights``/``widths`` ``[B]`` on the host."""
        params = [sample_view_params(heights, widths, v, gen) for v in self.views]
        index = torch.arange(len(heights), dtype=torch.float32)[:, None]
        if self.resampler == "roi_align":
            source = canvas.float().div_(255.0)
            _replicate_edges(source, heights.to(self.device, non_blocking=True), widths.to(self.device, non_blocking=True))
        groups = []
        for group in self.policy.groups():
            views, group_params = self.views[group], params[group]
            boxes = torch.cat([torch.cat([index, p.boxes], dim=1) for p in group_params])  # [V*B, 5], view-major
            size = views[0].size
            if self.resampler == "roi_align":
                crops = crop_roi_align(source, boxes, size)
            else:
                crops = crop_resize(canvas, boxes, size, views[0].interpolation)  # one filter per group
            groups.append(make_views(crops, group_params, views, self.mean, self.std, self.channels_last, self.gather))
        return MultiCropBatch(groups[0], groups[1] if len(groups) > 1 else None, n_global=self.policy.n_global)
