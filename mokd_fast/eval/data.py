"""Labelled train/val splits for evaluation, read from an ImageFolder, a ``.beton`` or DALI shards.

``--data_path`` holds ``train`` and ``val``, each an ImageFolder or a ``tools/convert_dataset.py``
output (``train.beton`` may also sit directly in ``--data_path``). Every backend yields the same
batches: normalised float images ``[B, 3, S, S]`` on the device, labels ``[B]`` in the TRAIN split's
class indices, and ``index [B]``: the sample's position in its split, ``-1`` for the padding that
gives every rank the same number of full batches (DDP collectives need equal calls on all ranks).

Transforms follow the official evaluations: validation resizes the shorter side to ``resize_size``
(bicubic) and centre-crops ``S``; linear-probe training draws ``RandomResizedCrop(S)`` (area
0.08-1) and a horizontal flip. FFCV decodes and crops in one step (its centre crop takes the
``S / resize_size`` central square and resizes it with OpenCV's area filter) and DALI resizes with
an antialiased cubic filter, so their pixels differ from PIL's by a few grey levels.
"""

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from mokd_fast.core.errors import UsageError
from pipelines.dali import (
    LABEL_BYTES,
    dali_to_torch,
    decode_labels,
    import_dali,
    shard_paths,
)
from pipelines.formats import BETON, CLASSES, MANIFEST, import_ffcv
from pipelines.torchvision import open_image_folder

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LAYOUT = ("<data_path>/train/<class>/<image> and <data_path>/val/<class>/<image> (ImageFolders), or the "
          "tools/convert_dataset.py outputs of both as <data_path>/train and <data_path>/val")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images [B,3,S,S], labels [B], index [B]


def default_resize(input_size: int) -> int:
    """Shorter side before the centre crop: 256 for 224 (official), the same 8:7 ratio otherwise."""
    return round(input_size * 256 / 224)


@dataclass(frozen=True)
class Split:
    """One split on disk.

    Attributes:
        path: The ImageFolder root, the ``.beton`` or the DALI conversion folder.
        format: ``imagefolder``, ``ffcv`` or ``dali``.
        classes: Class names in this split's own index order.
        labels: ``[N]`` labels in this split's index order, own class indices.
    """

    path: Path
    format: str
    classes: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _split_format(path: Path, fmt: str) -> tuple[Path, str]:
    if path.suffix == ".beton" and path.is_file():
        return path, "ffcv"
    report = path / "report.json"
    if report.is_file():
        found = json.loads(report.read_text()).get("format")
        if fmt not in ("auto", found):
            raise UsageError(f"--data_format {fmt} but {path} holds a {found} conversion")
        return (path / BETON, "ffcv") if found == "ffcv" else (path, "dali")
    if (path / BETON).is_file():
        return path / BETON, "ffcv"
    if fmt in ("ffcv", "dali"):
        raise UsageError(f"--data_format {fmt} but {path} is not a tools/convert_dataset.py --format {fmt} output")
    return path, "imagefolder"


def _converted_classes(folder: Path) -> list[str]:
    mapping = json.loads((folder / CLASSES).read_text())
    return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]


def open_split(path: str | Path, fmt: str = "auto") -> Split:
    """Opens one split, reading every label up front (index order).

    Raises:
        UsageError: The path is missing or is not a split this format can read.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; expected {LAYOUT}")
    path, fmt = _split_format(path, fmt)
    if fmt == "imagefolder":
        folder = open_image_folder(path)
        return Split(path, fmt, list(folder.classes), torch.tensor(folder.targets, dtype=torch.long))
    folder = path.parent if fmt == "ffcv" else path
    rows = [json.loads(line) for line in (folder / MANIFEST).read_text().splitlines() if line]
    labels = torch.tensor([row[1] for row in sorted(rows, key=lambda r: r[0])], dtype=torch.long)
    return Split(path, fmt, _converted_classes(folder), labels)


def open_splits(data_path: str | Path, fmt: str = "auto") -> tuple[Split, Split, torch.Tensor]:
    """The train and val splits and ``val_to_train [C_val]``, the map of val labels onto train's.

    Raises:
        UsageError: No val (or train) split, or a val class the train split lacks (its labels would
            be silently wrong otherwise).
    """
    root = Path(data_path)
    if not root.is_dir():
        raise UsageError(f"--data_path {root} is not a directory; expected {LAYOUT}")
    found = sorted(p.name for p in root.iterdir())
    parts = {}
    for name in ("train", "val"):
        candidates = [root / name, root / f"{name}.beton"]
        hit = next((c for c in candidates if c.exists()), None)
        if hit is None:
            raise UsageError(f"--data_path {root} has no {name} split (it holds {found[:10]}); expected {LAYOUT}")
        parts[name] = open_split(hit, fmt)
    train, val = parts["train"], parts["val"]
    index = {name: i for i, name in enumerate(train.classes)}
    unknown = [c for c in val.classes if c not in index]
    if unknown:
        raise UsageError(f"{val.path} has classes that {train.path} lacks: {unknown[:10]}; the splits must share "
                         "class names")
    return train, val, torch.tensor([index[c] for c in val.classes], dtype=torch.long)


def rank_batches(n: int, batch_size: int, world_size: int) -> int:
    """Batches every rank runs so that each sample is seen once (ranks take ``n / world`` each)."""
    return max(1, math.ceil(math.ceil(n / world_size) / batch_size))


class _IndexedFolder(Dataset):
    """ImageFolder samples by index; index ``-1`` is padding (image 0 again, marked -1)."""

    def __init__(self, split: Split, transform: T.Compose) -> None:
        self.folder = open_image_folder(split.path)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label = self.folder[max(index, 0)]
        return self.transform(image), label, index


def _folder_batches(split: Split, size: int, resize: int, train: bool, batch_size: int, rank: int,
                    world_size: int, seed: int, epoch: int, num_workers: int,
                    device: torch.device) -> Iterator[Batch]:
    crop = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()] if train else [
        T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    transform = T.Compose([*crop, T.ToTensor(), T.Normalize(MEAN, STD)])
    order = torch.arange(len(split))
    if train:
        order = order[torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + epoch))]
    mine = order[rank::world_size].tolist()
    mine += [-1] * (rank_batches(len(split), batch_size, world_size) * batch_size - len(mine))
    loader = DataLoader(_IndexedFolder(split, transform), batch_size=batch_size, sampler=mine, num_workers=num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed + 7919 * epoch),
                        persistent_workers=False)
    for images, labels, index in loader:
        yield images.to(device, non_blocking=True), labels.to(device), index.to(device)


def _ffcv_batches(split: Split, size: int, resize: int, train: bool, batch_size: int, rank: int,
                  world_size: int, seed: int, epoch: int, num_workers: int,
                  device: torch.device) -> Iterator[Batch]:
    threads = torch.get_num_threads()  # FFCV sets torch's thread count on import and per Loader
    import_ffcv()
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import (
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
    )
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    decoder = RandomResizedCropRGBImageDecoder((size, size)) if train else CenterCropRGBImageDecoder(
        (size, size), ratio=size / resize)
    image_ops = [decoder, *([RandomHorizontalFlip()] if train else []), ToTensor(), ToTorchImage()]
    loader = Loader(str(split.path), batch_size=batch_size, num_workers=max(1, num_workers),
                    order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL, distributed=world_size > 1,
                    seed=seed + epoch, drop_last=False,
                    pipelines={"image": image_ops, "label": [IntDecoder(), ToTensor()],
                               "index": [IntDecoder(), ToTensor()]})
    torch.set_num_threads(threads)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    # FFCV pads every rank to ceil(n / world) samples (DistributedSampler), so all ranks run len(loader) batches.
    for images, labels, index in loader:
        images = images.to(device, non_blocking=True).float().sub_(mean).div_(std)  # [B, 3, S, S] from uint8
        yield images.contiguous(), labels.view(-1).long().to(device), index.view(-1).long().to(device)
    torch.set_num_threads(threads)


def _dali_batches(split: Split, size: int, resize: int, train: bool, batch_size: int, rank: int,
                  world_size: int, seed: int, epoch: int, num_workers: int,
                  device: torch.device) -> Iterator[Batch]:
    dali, fn, types = import_dali()
    tars, indexes, n = shard_paths(split.path)
    gpu = device.type == "cuda"

    @dali.pipeline_def
    def graph():
        jpg, cls = fn.readers.webdataset(paths=tars, index_paths=indexes, ext=["jpg", "cls"], random_shuffle=train,
                                         shard_id=rank, num_shards=world_size, pad_last_batch=True,
                                         missing_component_behavior="error", name="reader")
        images = fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB)
        if train:
            images = fn.random_resized_crop(images, size=[size, size], random_area=[0.08, 1.0])
        else:
            images = fn.resize(images, resize_shorter=resize, interp_type=types.INTERP_CUBIC, antialias=True)
        images = fn.crop_mirror_normalize(
            images, crop=(size, size), crop_pos_x=0.5, crop_pos_y=0.5, dtype=types.FLOAT, output_layout="CHW",
            mean=[255 * m for m in MEAN], std=[255 * s for s in STD],
            mirror=fn.random.coin_flip(probability=0.5) if train else 0)
        return images, fn.pad(cls, shape=[LABEL_BYTES], fill_value=0)

    pipe = graph(batch_size=batch_size, num_threads=max(1, num_workers), device_id=(device.index or 0) if gpu else None,
                 seed=(seed + 7919 * epoch) % 2**31)
    pipe.build()
    # DALI gives shard r the samples [n*r // world, n*(r+1) // world) in order, then pads with the last.
    start, stop = n * rank // world_size, n * (rank + 1) // world_size
    for b in range(rank_batches(n, batch_size, world_size)):
        images, text = pipe.run()
        position = torch.arange(b * batch_size, (b + 1) * batch_size, device=device)
        index = torch.where(position < stop - start, position + start, -1)
        yield dali_to_torch(images, device), decode_labels(dali_to_torch(text, device).to(device)), index
    del pipe


_BACKENDS = {"imagefolder": _folder_batches, "ffcv": _ffcv_batches, "dali": _dali_batches}


def split_batches(split: Split, input_size: int, resize_size: int, train: bool, batch_size: int, rank: int,
                  world_size: int, device: torch.device, num_workers: int, seed: int = 0,
                  epoch: int = 0) -> Iterator[Batch]:
    """One pass over this rank's part of ``split``; every rank yields the same number of batches.

    Args:
        split: From ``open_split``.
        input_size: Crop side ``S``.
        resize_size: Shorter side before the validation centre crop.
        train: Linear-probe training transforms (random crop and flip, shuffled) instead of validation.
        batch_size: Images per batch and rank.
        rank: This process's rank.
        world_size: Processes.
        device: Where batches go (DALI decodes there when it is CUDA).
        num_workers: Loader workers (DataLoader processes, FFCV or DALI threads).
        seed: Seed of the shuffle and the random transforms.
        epoch: Mixed into the seed.

    Yields:
        ``(images, labels, index)``; labels are the split's own class indices.
    """
    yield from _BACKENDS[split.format](split, input_size, resize_size, train, batch_size, rank, world_size, seed,
                                       epoch, num_workers, device)
