"""The reference multi-crop pipeline: ImageFolder, PIL decoding and augmentation in DataLoader workers.

Workers decode each JPEG once, draw all its views with the policy and collate them view-major as
uint8; the main process moves them to the device (pinned, non-blocking) and normalises there. uint8
on the wire is a quarter of the bytes of float32, and ``x.float() / 255``, ``- mean``, ``/ std`` are
the same float32 operations ``ToTensor`` + ``Normalize`` run, so the result is identical.
"""

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from pipelines.batch import MultiCropBatch
from pipelines.errors import UsageError
from pipelines.pil_augment import augment_image
from pipelines.policy import MultiCropPolicy
from pipelines.sampler import ResumableDistributedSampler


def sample_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample's augmentation, well mixed from its coordinates."""
    return int(np.random.SeedSequence([seed, rank, epoch, index]).generate_state(1, np.uint64)[0])


def load_rgb(path: str) -> Image.Image:
    """Decodes an image file to RGB, naming the file if it cannot."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RuntimeError(f"cannot decode image {path}: {err}; remove or replace the file") from err


def open_image_folder(data_path: str | Path) -> ImageFolder:
    """An ImageFolder over ``data_path``, with errors that say what layout is expected.

    Raises:
        UsageError: The path is missing, has no class folders, or no images.
    """
    root = Path(data_path)
    layout = "an ImageFolder root: <root>/<class>/<image>.jpg (JPEG, PNG, ...)"
    if not str(data_path):
        raise UsageError(f"--data_path is required: {layout}")
    if (root.is_file() and root.suffix == ".beton") or (root / "report.json").is_file():
        raise UsageError(f"--data_path {root} is a tools/convert_dataset.py output; use --pipeline auto (or ffcv/dali); "
                         "the torchvision pipeline reads an ImageFolder")
    if not root.is_dir():
        raise UsageError(f"--data_path {root} does not exist or is not a directory; expected {layout}")
    try:
        return ImageFolder(str(root), loader=load_rgb)
    except FileNotFoundError as err:
        raise UsageError(f"--data_path {root} holds no images in class folders ({err}); expected {layout}") from err


class MultiCropFolder(Dataset):
    """ImageFolder samples turned into all their views, keyed by ``(index, epoch)`` from the sampler.

    Args:
        folder: The images.
        policy: Views to draw.
        seed: Augmentation seed of the run.
        rank: This process's rank (each rank draws its own augmentations).
    """

    def __init__(self, folder: ImageFolder, policy: MultiCropPolicy, seed: int, rank: int) -> None:
        self.samples = folder.samples
        self.policy = policy
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
        index, epoch = item
        path, label = self.samples[index]
        gen = torch.Generator()
        gen.manual_seed(sample_seed(self.seed, self.rank, epoch, index))
        return augment_image(load_rgb(path), self.policy, gen), label


def collate_views(samples: list[tuple[list[torch.Tensor], int]],
                  n_global: int = 2) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Stacks views view-major: globals ``[G*B, 3, Hg, Wg]``, locals ``[L*B, 3, Hl, Wl]`` or None (uint8), labels ``[B]``."""
    n_views = len(samples[0][0])
    by_view = [torch.stack([views[v] for views, _ in samples]) for v in range(n_views)]
    labels = torch.tensor([label for _, label in samples])
    local = torch.cat(by_view[n_global:]) if n_views > n_global else None
    return torch.cat(by_view[:n_global]), local, labels


class TorchvisionPipeline:
    """Yields ``MultiCropBatch`` es on the training device, one epoch at a time, resumable mid-epoch.

    Args:
        data_path: ImageFolder root.
        policy: The multi-crop policy.
        batch_size: Images per step on this rank.
        world_size: Number of ranks.
        rank: This rank.
        seed: Seed of the data order (shared) and of the augmentations (mixed with the rank).
        num_workers: DataLoader worker processes (persistent across epochs).
        device: Where batches are delivered.
        channels_last: Deliver channels-last crops (the float conversion writes them in that layout).
    """

    def __init__(
        self,
        data_path: str | Path,
        policy: MultiCropPolicy,
        batch_size: int,
        world_size: int,
        rank: int,
        seed: int,
        num_workers: int,
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        folder = open_image_folder(data_path)
        self.num_images = len(folder)
        self.targets = torch.tensor(folder.targets, dtype=torch.long)  # [N], the ImageFolder (= sample index) order
        self.sampler = ResumableDistributedSampler(len(folder), batch_size, world_size, rank, seed)
        if self.sampler.batches_per_epoch == 0:
            raise UsageError(
                f"--batch_size_per_gpu {batch_size} x {world_size} process(es) needs at least "
                f"{batch_size * world_size} images but --data_path {data_path} has {len(folder)}; "
                "lower the batch size or add images"
            )
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.loader = DataLoader(
            MultiCropFolder(folder, policy, seed, rank),
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=functools.partial(collate_views, n_global=policy.n_global),
            pin_memory=device.type == "cuda",
            drop_last=True,
            persistent_workers=num_workers > 0,
            # Its own generator: creating an iterator must not draw from the global RNG the model uses.
            generator=torch.Generator().manual_seed(seed),
        )
        self.n_global = policy.n_global
        self.mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(policy.std, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        """Batches per epoch on every rank."""
        return self.sampler.batches_per_epoch

    def sample_labels(self) -> torch.Tensor:
        """``[N]`` the class of every image, in the sample-index order ``batch.indices`` refers to."""
        return self.targets

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).to(torch.float32, memory_format=self.memory_format).div_(255)
        return x.sub_(self.mean).div_(self.std)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[MultiCropBatch]:
        """The batches of ``epoch`` from batch ``start_batch`` on."""
        self.sampler.set_epoch(epoch, start_batch)
        # The loader yields the sampler's batches in order (whatever the workers), so batch k holds
        # these indices: [B] per batch, sent along for methods with per-sample memory.
        order = torch.tensor(self.sampler.indices()).view(-1, self.loader.batch_size)
        for (global_crops, local_crops, labels), indices in zip(self.loader, order, strict=True):
            yield MultiCropBatch(
                self._normalize(global_crops),
                self._normalize(local_crops) if local_crops is not None else None,
                labels.to(self.device, non_blocking=True),
                self.n_global,
                indices.to(self.device, non_blocking=True),
            )
