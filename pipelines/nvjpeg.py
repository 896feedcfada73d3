"""nvJPEG pipeline: the DALI shard folder decoded with nothing but torch and torchvision.

Why it exists: DALI is one more CUDA-versioned binary wheel, and some clusters cannot install it
(pinned CUDA stacks, no internet on the nodes, policy). torchvision already ships nvJPEG bindings, so
this backend gives those clusters GPU decoding from the same ``tools/convert_dataset.py --format dali``
output, and gives the DALI backend an independent reference built from different parts.

How a batch is made: at construction one table locates every sample's JPEG bytes in the shards
(from the ``.idx`` files) and holds its label and size (from ``manifest.jsonl``), so no tar is parsed
while training. Per batch, the bytes are copied out of memory-mapped shards, decoded by one batched
``torchvision.io.decode_jpeg`` call (nvJPEG on CUDA, libjpeg on CPU), pasted into the top-left of a
``[B, 3, max h, max w]`` uint8 canvas, and every view is cut and augmented from it by
``pipelines.gpu_augment.BatchedMultiCrop``, exactly as the FFCV backend does.

What differs from the DALI backend: the order is a full permutation per epoch
(``ResumableDistributedSampler``, i.e. ``DistributedSampler``'s partition) rather than DALI's shuffle
buffer, and the colour jitter runs its four ops in torchvision's random per-sample order (the
``gpu_augment`` ops) rather than DALI's fixed order.

Batches are prepared ``prefetch`` ahead in a background thread; on CUDA that thread queues its work
on its own stream, and the consumer's stream waits on an event, so decoding and augmentation overlap
the training step without a host sync in the training thread.
"""

import contextlib
import json
import mmap
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from pipelines.batch import MultiCropBatch
from pipelines.dali import shard_paths
from pipelines.errors import UsageError
from pipelines.formats import MANIFEST, read_index
from pipelines.gpu_augment import BatchedMultiCrop
from pipelines.policy import MultiCropPolicy
from pipelines.sampler import ResumableDistributedSampler
from pipelines.torchvision import sample_seed

RECONVERT = "re-run python tools/convert_dataset.py SRC OUT --format dali into a fresh OUT"


@dataclass(frozen=True)
class SampleTable:
    """Where each converted sample's JPEG lies and what the manifest says about it, in manifest order.

    Built once so that reading a batch is a few slices of mapped memory: no tar headers are parsed
    and no file is opened per sample.

    Attributes:
        tars: Shard paths, indexed by ``shard``.
        index: ``[N]`` int64 sample index in the source listing (the manifest's first column).
        shard: ``[N]`` int64 shard of each sample.
        offset: ``[N]`` int64 byte offset of its JPEG data in the tar.
        size: ``[N]`` int64 byte count of its JPEG data.
        labels: ``[N]`` int64 class indices.
        heights: ``[N]`` int64 image heights as converted.
        widths: ``[N]`` int64 image widths as converted.
        names: Tar member names (``NNNNNNNN.jpg``).
        sources: The source files the converter read (named when a sample cannot be decoded).
    """

    tars: list[str]
    index: torch.Tensor
    shard: torch.Tensor
    offset: torch.Tensor
    size: torch.Tensor
    labels: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor
    names: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, i: int) -> str:
        """Names sample ``i`` the way a user can act on: its shard, member and source file."""
        return f"{self.names[i]} in {self.tars[self.shard[i]]} (converted from {self.sources[i]})"


def _index_locations(tars: list[str], indexes: list[str]) -> dict[str, tuple[int, int, int]]:
    """``{member name: (shard, offset, size)}`` of every JPEG the shard indexes list, checked against the tars."""
    located: dict[str, tuple[int, int, int]] = {}
    for shard, (tar, index) in enumerate(zip(tars, indexes)):
        try:
            entries = read_index(Path(index))
            tar_size = os.path.getsize(tar)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read shard {tar} or its index ({err}); {RECONVERT}") from err
        for entry in entries:
            if "jpg" not in entry:
                raise UsageError(f"{index} lists a sample without a jpg member ({entry}); {RECONVERT}")
            offset, size, name = entry["jpg"]
            if offset + size > tar_size:
                raise UsageError(f"{index} places {name} beyond the end of {tar} ({tar_size} bytes), "
                                 f"so the shard is truncated; {RECONVERT}")
            located[name] = (shard, offset, size)
    return located


def load_table(data_path: Path) -> SampleTable:
    """The sample table of a ``--format dali`` conversion, with its indexes and manifest checked to agree.

    Raises:
        UsageError: Not a dali conversion, or its report, shard indexes and manifest disagree.
    """
    tars, indexes, converted = shard_paths(data_path, "nvjpeg")
    manifest = data_path / MANIFEST
    located = _index_locations(tars, indexes)
    try:
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line]
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {manifest} ({err}); {RECONVERT}") from err
    if not len(rows) == len(located) == converted:
        raise UsageError(f"{data_path}: report.json counts {converted} samples, {manifest} {len(rows)} and the shard "
                         f"indexes {len(located)} distinct JPEGs; {RECONVERT}")
    columns, names, sources = [], [], []
    for row in rows:
        try:
            index, label, width, height, source = row
            name = f"{index:08d}.jpg"
        except (TypeError, ValueError) as err:
            raise UsageError(f"{manifest}: malformed row {row!r} ({err}); {RECONVERT}") from err
        if name not in located:
            raise UsageError(f"{manifest} lists sample {index} ({source}) but no shard index has {name}; {RECONVERT}")
        columns.append((index, *located[name], label, height, width))
        names.append(name)
        sources.append(source)
    index, shard, offset, size, labels, heights, widths = torch.tensor(columns, dtype=torch.int64).unbind(dim=1)
    return SampleTable(tars, index, shard, offset, size, labels, heights, widths, names, sources)


def _map(tar: str) -> memoryview:
    """A read-only mapping of a whole shard (the descriptor is closed: no per-process open-file limit to hit)."""
    with open(tar, "rb") as f:
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


class NvJPEGPipeline:
    """Yields ``MultiCropBatch`` es from DALI shards, decoded by ``torchvision.io.decode_jpeg``.

    Args:
        data_path: Output folder of ``tools/convert_dataset.py --format dali``.
        policy: The multi-crop policy.
        batch_size: Images per step on this rank.
        world_size: Number of ranks (``DistributedSampler``'s partition, whole batches only).
        rank: This rank.
        seed: Seed of the order (shared) and of the augmentations (mixed with rank, epoch, batch).
        num_workers: CPU decoding threads (torchvision's libjpeg decode releases the GIL); unused on
            CUDA, where one batched nvJPEG call decodes the batch.
        device: Where images are decoded and batches delivered.
        channels_last: Deliver channels-last crops.
        prefetch: Batches prepared ahead in a background thread; 0 prepares each in the caller's thread.
        resampler: How views are cut from the canvas (``gpu_augment.BatchedMultiCrop``).
        gather: Photometric ops only on the samples their coins chose (``gpu_augment.make_views``).

    Raises:
        UsageError: ``data_path`` is not a consistent dali conversion, or holds too few images.
    """

    def __init__(self, data_path: str | Path, policy: MultiCropPolicy, batch_size: int, world_size: int, rank: int,
                 seed: int, num_workers: int, device: torch.device, channels_last: bool = False, prefetch: int = 2,
                 resampler: str = "auto", gather: bool = True) -> None:
        self.table = load_table(Path(data_path))
        self.num_images = len(self.table)
        self.sampler = ResumableDistributedSampler(self.num_images, batch_size, world_size, rank, seed)
        if self.sampler.batches_per_epoch == 0:
            raise UsageError(f"--batch_size_per_gpu {batch_size} x {world_size} process(es) needs more images than "
                             f"{data_path} holds ({self.num_images}); lower the batch size")
        self.maps = [_map(tar) for tar in self.table.tars]
        self.batch_size, self.seed, self.rank, self.device, self.prefetch = batch_size, seed, rank, device, prefetch
        self.crops = BatchedMultiCrop(policy, device, channels_last, gather, resampler)
        self.decode_threads = num_workers if device.type == "cpu" else 1
        self.decode_pool = ThreadPoolExecutor(self.decode_threads, "nvjpeg-decode") if self.decode_threads > 1 else None
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" and prefetch > 0 else None

    def __len__(self) -> int:
        """Batches per epoch on every rank."""
        return self.sampler.batches_per_epoch

    def sample_labels(self) -> torch.Tensor:
        """``[N]`` the class of every sample, in the sample-index order ``batch.indices`` refers to."""
        labels = torch.empty_like(self.table.labels)
        labels[self.table.index] = self.table.labels
        return labels

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[MultiCropBatch]:
        """The batches of ``epoch`` from batch ``start_batch`` on; earlier ones are neither read nor decoded."""
        self.sampler.set_epoch(epoch, start_batch)
        order = self.sampler.indices()  # this rank's samples from start_batch on, whole batches
        jobs = [(start_batch + k, order[k * self.batch_size : (k + 1) * self.batch_size])
                for k in range(len(order) // self.batch_size)]
        if self.prefetch == 0:
            for batch_index, ids in jobs:
                yield self._make(epoch, batch_index, ids)
        else:
            yield from self._prefetched(epoch, jobs)

    def _prefetched(self, epoch: int, jobs: list[tuple[int, list[int]]]) -> Iterator[MultiCropBatch]:
        """``jobs``' batches made by a background thread, at most ``prefetch`` ahead of the consumer."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        # A daemon: a consumer that never closes its generator cannot hold up interpreter exit.
        worker = threading.Thread(target=self._produce, args=(epoch, jobs, ready, stop), name="nvjpeg-prefetch",
                                  daemon=True)
        worker.start()
        try:
            for _ in jobs:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                batch, done = item
                if done is not None:
                    self._adopt(batch, done)
                yield batch
        finally:  # also on break or garbage collection of the generator (GeneratorExit)
            stop.set()
            # Emptying the queue gives a producer blocked on a full queue room for its one last put,
            # after which it sees ``stop``; every put is preceded by a check of ``stop``.
            with contextlib.suppress(queue.Empty):
                while True:
                    ready.get_nowait()
            worker.join()

    def _produce(self, epoch: int, jobs: list[tuple[int, list[int]]], ready: queue.Queue,
                 stop: threading.Event) -> None:
        """The prefetch thread: makes the batches in order; an exception is handed to the consumer."""
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                for batch_index, ids in jobs:
                    if stop.is_set():
                        return
                    batch = self._make(epoch, batch_index, ids)
                    done = None
                    if self.stream is not None:
                        done = torch.cuda.Event()
                        done.record(self.stream)  # marks the end of this batch's kernels on the prefetch stream
                    ready.put((batch, done))
        except BaseException as err:  # noqa: BLE001 (re-raised in the consumer's thread)
            ready.put(err)

    def _adopt(self, batch: MultiCropBatch, done: torch.cuda.Event) -> None:
        """Hands a prefetched CUDA batch to the consumer's stream, without a host sync."""
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(done)  # the step's kernels queue behind the batch's, on the GPU
        for tensor in (batch.global_crops, batch.local_crops, batch.labels, batch.indices):
            if tensor is None:
                continue
            # Made on the prefetch stream: the allocator must not reuse their memory there before the
            # consumer's stream is done with them.
            tensor.record_stream(stream)

    def _make(self, epoch: int, batch_index: int, ids: list[int]) -> MultiCropBatch:
        """Batch ``batch_index`` of ``epoch``: every view cut and augmented from the decoded samples ``ids``."""
        canvas, heights, widths = self._canvas(ids)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.rank, epoch, batch_index))
        batch = self.crops(canvas, heights, widths, gen)
        batch.labels = self.table.labels[ids].to(self.device, non_blocking=True)
        batch.indices = self.table.index[ids].to(self.device, non_blocking=True)
        return batch

    def _canvas(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples ``ids`` decoded, each in the top-left of a shared canvas on ``self.device``.

        Returns:
            ``[B, 3, Hc, Wc]`` uint8 canvas (channels-last memory, zeros outside each image) and the
            images' ``[B]`` heights and widths on the host.
        """
        images = self._decode(ids, self._read(ids))
        heights, widths = self.table.heights[ids], self.table.widths[ids]
        # canvas: [B, Hc, Wc, 3] memory seen as [B, 3, Hc, Wc] (channels-last, the fast case of both
        # resamplers); zeros outside each image.
        canvas = torch.zeros(len(ids), int(heights.max()), int(widths.max()), 3, dtype=torch.uint8,
                             device=self.device).permute(0, 3, 1, 2)
        for b, (i, image, height, width) in enumerate(zip(ids, images, heights.tolist(), widths.tolist())):
            if image.shape != (3, height, width):  # host-side metadata, no sync
                raise RuntimeError(f"{self.table.describe(i)} decodes to {tuple(image.shape)} but the manifest says "
                                   f"3 x {height} x {width}; {RECONVERT}")
            canvas[b, :, :height, :width] = image  # image: [3, h, w]
        return canvas, heights, widths

    def _read(self, ids: list[int]) -> list[torch.Tensor]:
        """The JPEG bytes of ``ids`` as 1-D uint8 CPU tensors, views of one buffer filled from the mapped shards."""
        sizes = self.table.size[ids]
        ends = sizes.cumsum(0).tolist()
        buffer = torch.empty(ends[-1], dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        parts = []
        for shard, offset, size, end in zip(self.table.shard[ids].tolist(), self.table.offset[ids].tolist(),
                                            sizes.tolist(), ends):
            view[end - size : end] = self.maps[shard][offset : offset + size]  # page cache -> buffer, one copy
            parts.append(buffer[end - size : end])
        return parts

    def _decode(self, ids: list[int], data: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[3, h, w]`` uint8 RGB images on the device; a failure is traced to the sample that caused it.

        Raises:
            RuntimeError: A JPEG cannot be decoded; the message names its shard, member and source file.
        """
        try:
            return self._decode_batch(data)
        except RuntimeError as err:
            for i, one in zip(ids, data):  # a batched call does not say which image failed
                try:
                    decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device)
                except RuntimeError as culprit:
                    raise RuntimeError(
                        f"cannot decode {self.table.describe(i)}: {culprit}; the shard is damaged or the source was "
                        f"not a valid image: {RECONVERT}, or remove the source file and convert again") from culprit
            raise err

    def _decode_batch(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        """One batched ``decode_jpeg`` (nvJPEG on CUDA), or on CPU one per thread over contiguous slices."""
        if self.decode_pool is None:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        bounds = [len(data) * k // self.decode_threads for k in range(self.decode_threads + 1)]
        slices = [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
        decoded = self.decode_pool.map(lambda part: decode_jpeg(part, mode=ImageReadMode.RGB), slices)
        return [image for part in decoded for image in part]
