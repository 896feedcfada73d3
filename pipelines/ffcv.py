"""FFCV pipeline: each image decoded once per epoch into a shared canvas, every view made batched on the device.

FFCV's Loader (JIT-compiled, multi-threaded) reads the ``.beton`` written by
``tools/convert_dataset.py --format ffcv`` in a random order (DistributedSampler's partition under
DDP, whole batches only) and decodes each JPEG once into the top-left corner of a fixed
``[max height, max width, 3]`` canvas. The canvases go to the device without blocking; the
image sizes come from the file's metadata (looked up by the ``index`` field), and
``pipelines.gpu_augment`` cuts all 2 + L views from them in a few batched kernels.
"""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipelines.batch import MultiCropBatch
from pipelines.errors import UsageError
from pipelines.formats import import_ffcv, manifest_labels
from pipelines.gpu_augment import BatchedMultiCrop
from pipelines.policy import MultiCropPolicy
from pipelines.torchvision import sample_seed

CONVERT_HINT = "convert the ImageFolder first: python tools/convert_dataset.py SRC OUT --format ffcv, then --data_path OUT/train.beton"


def _canvas_decoder_class() -> type:
    """FFCV's decoder Operation for variable-size images onto a fixed canvas (defined once FFCV is importable)."""
    from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
    from ffcv.libffcv import imdecode, memcpy
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler

    class CanvasRGBImageDecoder(SimpleRGBImageDecoder):
        """Decodes each image once, to the top-left of a ``[max_h, max_w, 3]`` uint8 canvas."""

        def declare_state_and_memory(self, previous_state):
            shape = (int(self.metadata["height"].max()), int(self.metadata["width"].max()), 3)
            dtype = np.dtype("<u1")
            scratch = (shape[0] * shape[1] * 3,)
            return (replace(previous_state, jit_mode=True, shape=shape, dtype=dtype),
                    (AllocationQuery(shape, dtype), AllocationQuery(scratch, dtype)))

        def generate_code(self):
            mem_read = self.memory_read
            imdecode_c = Compiler.compile(imdecode)
            memcpy_c = Compiler.compile(memcpy)
            my_range = Compiler.get_iterator()
            jpg = IMAGE_MODES["jpg"]

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, scratch = my_storage
                for dst_ix in my_range(len(batch_indices)):
                    field = metadata[batch_indices[dst_ix]]
                    data = mem_read(field["data_ptr"], storage_state)
                    height, width = np.uint32(field["height"]), np.uint32(field["width"])
                    pixels = scratch[dst_ix][: height * width * np.uint32(3)]
                    if field["mode"] == jpg:
                        imdecode_c(data, pixels, height, width, height, width, 0, 0, 1, 1, False, False)
                    else:
                        memcpy_c(data, pixels)
                    destination[dst_ix][:height, :width] = pixels.reshape(height, width, 3)
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

    return CanvasRGBImageDecoder


class FFCVPipeline:
    """Yields ``MultiCropBatch`` es made on ``device`` from a ``.beton``.

    Args:
        data_path: The ``.beton`` file.
        policy: The multi-crop policy.
        batch_size: Images per step on this rank.
        world_size: Number of ranks (FFCV partitions each epoch like DistributedSampler).
        rank: This rank.
        seed: Seed of the order (shared) and of the augmentations (mixed with rank, epoch, batch).
        num_workers: FFCV decoding threads.
        device: Where batches are delivered.
        os_cache: Let the OS page cache hold the file (FFCV's option; off reads through FFCV's own cache).
        batches_ahead: Batches FFCV decodes ahead of the step.
        channels_last: Deliver channels-last crops.
        resampler: How views are cut from the canvas (``gpu_augment.BatchedMultiCrop``).
        gather: Photometric ops only on the samples their coins chose (``gpu_augment.make_views``).
    """

    def __init__(self, data_path: str | Path, policy: MultiCropPolicy, batch_size: int, world_size: int, rank: int,
                 seed: int, num_workers: int, device: torch.device, os_cache: bool = True, batches_ahead: int = 3,
                 channels_last: bool = False, resampler: str = "auto", gather: bool = True) -> None:
        threads = torch.get_num_threads()  # FFCV sets torch's thread count on import and per Loader
        import_ffcv()
        from ffcv.fields.basics import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.reader import Reader
        from ffcv.transforms import ToDevice, ToTensor

        path = Path(data_path)
        if not path.is_file() or path.suffix != ".beton":
            raise UsageError(f"--pipeline ffcv reads a .beton file, but --data_path is {path}; {CONVERT_HINT}")
        self.path = path
        metadata = Reader(str(path)).metadata
        self.heights = torch.from_numpy(metadata["f0"]["height"].astype(np.int64))
        self.widths = torch.from_numpy(metadata["f0"]["width"].astype(np.int64))
        self.num_images = len(metadata)
        image_ops = [_canvas_decoder_class()(), ToTensor()]
        if device.type == "cuda":
            image_ops.append(ToDevice(device, non_blocking=True))
        self.loader = Loader(
            str(path), batch_size=batch_size, num_workers=max(1, num_workers), os_cache=os_cache,
            order=OrderOption.RANDOM, distributed=world_size > 1, seed=seed, drop_last=True,
            batches_ahead=batches_ahead,
            pipelines={"image": image_ops, "label": [IntDecoder(), ToTensor()], "index": [IntDecoder(), ToTensor()]},
        )
        torch.set_num_threads(threads)
        if len(self.loader) == 0:
            raise UsageError(f"--batch_size_per_gpu {batch_size} x {world_size} process(es) needs more images than "
                             f"{path} holds ({self.num_images}); lower the batch size")
        self.seed, self.rank, self.device = seed, rank, device
        self.crops = BatchedMultiCrop(policy, device, channels_last, gather, resampler)

    def __len__(self) -> int:
        """Batches per epoch on every rank."""
        return len(self.loader)

    def sample_labels(self) -> torch.Tensor:
        """``[N]`` the class of every sample in index order, from the conversion's manifest beside the .beton."""
        return torch.tensor(manifest_labels(self.path.parent), dtype=torch.long)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[MultiCropBatch]:
        """The batches of ``epoch`` from batch ``start_batch`` on (earlier ones are read and dropped)."""
        threads = torch.get_num_threads()
        self.loader.next_epoch = epoch
        for i, (canvas, label, index) in enumerate(self.loader):
            torch.set_num_threads(threads)
            if i < start_batch:
                continue
            ids = index[:, 0].cpu()
            gen = torch.Generator().manual_seed(sample_seed(self.seed, self.rank, epoch, i))
            # canvas: [B, Hc, Wc, 3] uint8 -> [B, 3, Hc, Wc], a channels-last view (the fast case of both resamplers)
            batch = self.crops(canvas.permute(0, 3, 1, 2), self.heights[ids], self.widths[ids], gen)
            batch.labels = label[:, 0].to(self.device, non_blocking=True)
            batch.indices = index[:, 0].to(self.device, non_blocking=True)
            yield batch
