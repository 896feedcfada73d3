"""The MOKD multi-crop augmentation policy, as data read by every pipeline backend.

The values transcribe the official ``augmentations/dino_augmentation.py`` (DINO's policy): every view
is a bicubic random resized crop with aspect ratio 3/4..4/3, a horizontal flip (p 0.5), colour jitter
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8), grayscale (p 0.2), then a Gaussian
blur with sigma uniform in 0.1..2 (global view 1: p 1.0; global view 2: p 0.1, then solarize at 128
with p 0.2; local views: p 0.5), then ImageNet normalisation.
"""

from dataclasses import dataclass, replace

# How views are cut from a decoded canvas by pipelines.gpu_augment (train.py --crop_resampler).
RESAMPLERS = ("auto", "roi_align", "resize")
INTERPOLATIONS = ("bicubic", "bilinear")  # of the crop's resize
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewPolicy:
    """How one view is drawn from an image.

    Attributes:
        size: Output side in pixels (square views).
        scale: Range of the crop's area as a fraction of the image's.
        ratio: Range of the crop's aspect ratio (sampled log-uniformly).
        interpolation: Resize filter ("bicubic" as official).
        flip_p: Probability of a horizontal flip.
        jitter: Brightness, contrast, saturation and hue strengths of the colour jitter.
        jitter_p: Probability that the colour jitter is applied.
        grayscale_p: Probability of conversion to 3-channel grayscale.
        grayscale_before_jitter: Grayscale first, then the colour jitter (MoCo v1's order); the
            default is jitter, then grayscale (DINO, SimCLR, MoCo v2).
        extra_grayscale_p: Probability of a second grayscale after the first (DoGo's SimSiam views
            apply ``RandomGrayscale`` twice); 0 draws nothing, so other policies' draws are unchanged.
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's standard deviation in pixels.
        solarize_p: Probability of solarisation.
        solarize_threshold: Pixels at or above this 8-bit value are inverted.
    """

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    grayscale_before_jitter: bool = False
    extra_grayscale_p: float = 0.0
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: int = 128

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")


@dataclass(frozen=True)
class MultiCropPolicy:
    """All views of one image: one or more same-size global views, then ``local_crops_number`` local views.

    A method asks for the views it consumes: MOKD (DINO's multi-crop) two global views that differ
    in blur and solarize plus L local views; a method without local views sets
    ``local_crops_number=0``. Each global view has its own policy, so two peers can see views drawn
    with different augmentations.

    Attributes:
        global_views: Policies of the global views, in view order (all of one output size).
        local_view: Policy shared by every local view.
        local_crops_number: Number of local views (0: none).
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Raises:
        ValueError: No global view, global views of different sizes, or a negative local count.
    """

    global_views: tuple[ViewPolicy, ...]
    local_view: ViewPolicy
    local_crops_number: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not self.global_views:
            raise ValueError("a multi-crop policy needs at least one global view")
        sizes = {view.size for view in self.global_views}
        if len(sizes) > 1:
            raise ValueError(f"global views must share one size (one forward pass per resolution), got {sorted(sizes)}")
        if self.local_crops_number < 0:
            raise ValueError(f"local_crops_number must be >= 0, got {self.local_crops_number}")

    @classmethod
    def mokd(
        cls,
        global_size: int = 224,
        local_size: int = 96,
        global_crops_scale: tuple[float, float] = (0.4, 1.0),
        local_crops_scale: tuple[float, float] = (0.05, 0.4),
        local_crops_number: int = 8,
    ) -> "MultiCropPolicy":
        """The official policy with the sizes, scales and count a run chose."""
        return cls(
            global_views=(
                ViewPolicy(global_size, tuple(global_crops_scale), blur_p=1.0),
                ViewPolicy(global_size, tuple(global_crops_scale), blur_p=0.1, solarize_p=0.2),
            ),
            local_view=ViewPolicy(local_size, tuple(local_crops_scale), blur_p=0.5),
            local_crops_number=local_crops_number,
        )

    def with_jitter(self, jitter: tuple[float, float, float, float] | None) -> "MultiCropPolicy":
        """This policy with every view's colour-jitter strengths replaced by ``jitter`` (None: unchanged).

        A short run on data whose colours are random per image needs a hue jitter that randomises
        colour (MoCo v1's 0.4 turns a hue anywhere within +-144 degrees); at the usual 0.1 the colours
        survive augmentation and tell every image apart, so instance discrimination learns colour,
        not shape (docs/learning-health.md).
        """
        if jitter is None:
            return self
        return replace(self, global_views=tuple(replace(v, jitter=tuple(jitter)) for v in self.global_views),
                       local_view=replace(self.local_view, jitter=tuple(jitter)))

    @property
    def n_global(self) -> int:
        """Number of global views (the first ``n_global`` views of every image)."""
        return len(self.global_views)

    def summary(self) -> str:
        """``"2x224 + 8x96"``: views times side, per group (for the run's first line)."""
        text = f"{self.n_global}x{self.global_views[0].size}"
        return text + (f" + {self.local_crops_number}x{self.local_view.size}" if self.local_crops_number else "")

    def views(self) -> list[ViewPolicy]:
        """Policies in view order: the global views, then each local view."""
        return [*self.global_views, *[self.local_view] * self.local_crops_number]

    def groups(self) -> list[slice]:
        """The non-empty resolution groups as slices of ``views()``: globals, then locals if any."""
        n = self.n_global
        return [slice(0, n)] + ([slice(n, n + self.local_crops_number)] if self.local_crops_number else [])
