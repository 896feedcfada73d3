"""DALI pipeline: shards from ``tools/convert_dataset.py --format dali``, decoded once, every view made by DALI.

With a GPU the JPEGs are decoded by nvJPEG (device "mixed") and every view is cropped, flipped,
colour-jittered, blurred, solarized and normalised on the GPU; batches reach PyTorch as CUDA tensors
without a host round trip. Without one the same graph runs on DALI's CPU operators
(``device_id=None``). Per-sample probabilities use DALI conditionals (``if coin_flip(...)``).

Differences from the reference pipeline, by construction of DALI's operators: the colour jitter runs
contrast (around each image's mean gray), then brightness (``fn.brightness_contrast``), then hue and
saturation (``fn.hsv``) in that fixed order rather than torchvision's random per-sample order; the
shuffle is DALI's reader buffer, not a full permutation. Factor ranges and probabilities are the
policy's.

Each epoch builds its pipeline from a seed of (seed, rank, epoch) and takes exactly ``len(self)``
batches from this rank's shard of the samples, so every rank runs the same number of steps and a
resumed run redraws the same batches.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipelines.batch import MultiCropBatch
from pipelines.errors import UsageError
from pipelines.formats import INSTALL_DALI
from pipelines.policy import MultiCropPolicy, ViewPolicy
from pipelines.torchvision import sample_seed

CONVERT_HINT = "convert the ImageFolder first: python tools/convert_dataset.py SRC OUT --format dali, then --data_path OUT"
LABEL_BYTES = 12  # decimal label text is padded to this many bytes to make a dense tensor


def import_dali():
    try:
        from nvidia import dali
        from nvidia.dali import fn, types
    except ImportError as err:
        raise UsageError(f"DALI is not installed: {INSTALL_DALI} ({err})") from err
    return dali, fn, types


def shard_paths(data_path: Path, pipeline: str = "dali") -> tuple[list[str], list[str], int]:
    """Tar and index paths of a conversion output folder, and its sample count (``pipeline`` names the reader in errors)."""
    report = data_path / "report.json"
    if not data_path.is_dir() or not report.exists():
        raise UsageError(f"--pipeline {pipeline} reads a shard folder written by the converter, but --data_path is "
                         f"{data_path}; {CONVERT_HINT}")
    info = json.loads(report.read_text())
    if info.get("format") != "dali":
        raise UsageError(f"--data_path {data_path} holds a {info.get('format')} conversion; {CONVERT_HINT}")
    tars = [str(data_path / s) for s in info["shards"]]
    return tars, [t[:-4] + ".idx" for t in tars], int(info["converted"])


def _maybe_gray(fn, types, images, p: float):
    """``images`` as 3-channel gray with probability ``p`` per sample (a DALI conditional; a module-level
    function, since DALI's conditional conversion does not reach closures that rebind outer names)."""
    if fn.random.coin_flip(probability=p, dtype=types.BOOL):
        gray = fn.color_space_conversion(images, image_type=types.RGB, output_type=types.GRAY)
        images = fn.cat(gray, gray, gray, axis=2)
    return images


def _view(fn, types, images, view: ViewPolicy, mean: list[float], std: list[float], channels_last: bool):
    """One view of every image in the batch (DALI graph; runs where ``images`` live)."""
    interp = {"bicubic": types.INTERP_CUBIC, "bilinear": types.INTERP_LINEAR}[view.interpolation]
    out = fn.random_resized_crop(images, size=[view.size, view.size], random_area=list(view.scale),
                                 random_aspect_ratio=list(view.ratio), interp_type=interp, antialias=True)
    b, c, s, h = view.jitter

    def factor(low: float, high: float, neutral: float):  # DALI's uniform needs a non-empty range
        return fn.random.uniform(range=[low, high]) if high > low else neutral

    if view.grayscale_before_jitter:
        out = _maybe_gray(fn, types, out, view.grayscale_p)
    if fn.random.coin_flip(probability=view.jitter_p, dtype=types.BOOL):
        gray_mean = fn.reductions.mean(fn.color_space_conversion(out, image_type=types.RGB, output_type=types.GRAY))
        out = fn.brightness_contrast(out, brightness=factor(max(0.0, 1 - b), 1 + b, 1.0),
                                     contrast=factor(max(0.0, 1 - c), 1 + c, 1.0), contrast_center=gray_mean)
        out = fn.hsv(out, hue=factor(-360 * h, 360 * h, 0.0), saturation=factor(max(0.0, 1 - s), 1 + s, 1.0))
    if not view.grayscale_before_jitter:
        out = _maybe_gray(fn, types, out, view.grayscale_p)
    if view.extra_grayscale_p > 0:
        out = _maybe_gray(fn, types, out, view.extra_grayscale_p)
    if view.blur_p > 0:  # noqa: SIM102 (a trace-time test; the inner if is a DALI conditional)
        if fn.random.coin_flip(probability=view.blur_p, dtype=types.BOOL):
            # Without window_size DALI sizes each sample's kernel 2 ceil(3 sigma) + 1, as gpu_augment does;
            # the fixed widest window was the largest cost of this graph on CPU (docs/benchmarks.md).
            out = fn.gaussian_blur(out, sigma=fn.random.uniform(range=list(view.blur_sigma)))
    if view.solarize_p > 0:  # noqa: SIM102 (a trace-time test; the inner if is a DALI conditional)
        if fn.random.coin_flip(probability=view.solarize_p, dtype=types.BOOL):
            above = fn.cast(out >= view.solarize_threshold, dtype=types.UINT8)  # 1 where inverted
            out = fn.cast(above * (255 - out) + (1 - above) * out, dtype=types.UINT8)
    return fn.crop_mirror_normalize(out, mirror=fn.random.coin_flip(probability=view.flip_p), mean=mean, std=std,
                                    dtype=types.FLOAT, output_layout="HWC" if channels_last else "CHW")


class DALIPipeline:
    """Yields ``MultiCropBatch`` es from DALI webdataset shards.

    Args:
        data_path: Output folder of ``tools/convert_dataset.py --format dali``.
        policy: The multi-crop policy.
        batch_size: Images per step on this rank.
        world_size: Number of ranks (each reads shard ``rank`` of ``world_size`` of the samples).
        rank: This rank.
        seed: Seed of the shuffle and augmentations (mixed with rank and epoch).
        num_workers: DALI CPU threads.
        device: CUDA (nvJPEG decode, GPU ops) or CPU.
        channels_last: Deliver channels-last crops.
        prefetch: Batches DALI prepares ahead of the step.
    """

    def __init__(self, data_path: str | Path, policy: MultiCropPolicy, batch_size: int, world_size: int, rank: int,
                 seed: int, num_workers: int, device: torch.device, channels_last: bool = False,
                 prefetch: int = 2) -> None:
        self.dali, self.fn, self.types = import_dali()
        self.tars, self.indexes, self.num_images = shard_paths(Path(data_path))
        self.policy, self.batch_size, self.world_size, self.rank = policy, batch_size, world_size, rank
        self.seed, self.num_workers, self.device = seed, max(1, num_workers), device
        self.channels_last, self.prefetch = channels_last, prefetch
        self.batches_per_epoch = (self.num_images // world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise UsageError(f"--batch_size_per_gpu {batch_size} x {world_size} process(es) needs more images than "
                             f"{data_path} holds ({self.num_images}); lower the batch size")

    def __len__(self) -> int:
        """Batches per epoch on every rank."""
        return self.batches_per_epoch

    def sample_labels(self) -> torch.Tensor:
        """Refused: DALI's webdataset reader does not give the sample indices that labels-per-index serve.

        Raises:
            UsageError: Always; the message names the pipelines that do.
        """
        raise UsageError("this method keeps per-sample memory, which needs each batch's dataset indices; the dali "
                         "pipeline does not deliver them. Use --pipeline nvjpeg (the same shards), ffcv or torchvision")

    def _build(self, epoch: int):
        fn, types = self.fn, self.types
        mean = [255 * m for m in self.policy.mean]
        std = [255 * s for s in self.policy.std]
        gpu = self.device.type == "cuda"

        @self.dali.pipeline_def(enable_conditionals=True)
        def graph():
            jpg, cls = fn.readers.webdataset(
                paths=self.tars, index_paths=self.indexes, ext=["jpg", "cls"], random_shuffle=True,
                # Rotating the shard with the epoch gives each rank a different part every epoch.
                shard_id=(self.rank + epoch) % self.world_size, num_shards=self.world_size, missing_component_behavior="error", name="reader")
            images = fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB)
            views = [_view(fn, types, images, v, mean, std, self.channels_last) for v in self.policy.views()]
            return (*views, fn.pad(cls, shape=[LABEL_BYTES], fill_value=0))

        pipe = graph(batch_size=self.batch_size, num_threads=self.num_workers,
                     device_id=(self.device.index or 0) if gpu else None,
                     seed=sample_seed(self.seed, self.rank, epoch, 0) % (2**31), prefetch_queue_depth=self.prefetch)
        pipe.build()
        return pipe

    def _to_torch(self, tensor_list) -> torch.Tensor:
        out = dali_to_torch(tensor_list, self.device)
        return out.permute(0, 3, 1, 2) if self.channels_last and out.ndim == 4 else out

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[MultiCropBatch]:
        """The batches of ``epoch`` from batch ``start_batch`` on (earlier ones are drawn and dropped)."""
        pipe = self._build(epoch)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for i in range(self.batches_per_epoch):
            outputs = pipe.run()
            if i < start_batch:
                continue
            views = [self._to_torch(t) for t in outputs[:-1]]
            groups = [torch.cat(views[g]).contiguous(memory_format=fmt) for g in self.policy.groups()]
            yield MultiCropBatch(groups[0], groups[1] if len(groups) > 1 else None,
                                 decode_labels(self._to_torch(outputs[-1]).to(self.device)), self.policy.n_global)
        del pipe


def dali_to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    """A dense torch tensor of one DALI output (a batch of equal-shaped samples), where DALI left it."""
    dense = tensor_list.as_tensor()
    # On the GPU DLPack hands DALI's memory over without a copy; DALI reuses its buffers, hence the clone.
    return torch.from_dlpack(dense).clone() if device.type == "cuda" else torch.from_numpy(np.array(dense))


def decode_labels(text: torch.Tensor) -> torch.Tensor:
    """``[B]`` int64 from ``[B, LABEL_BYTES]`` zero-padded ASCII decimal labels."""
    digits = text.long() - ord("0")
    valid = text > 0
    length = valid.sum(dim=1, keepdim=True)
    position = torch.arange(text.shape[1], device=text.device).unsqueeze(0)
    powers = torch.where(valid, 10 ** (length - 1 - position).clamp(min=0), torch.zeros_like(digits))
    return (digits * powers).sum(dim=1)
