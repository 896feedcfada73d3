"""What the k-NN and linear evaluations share: flags, set-up, feature caching and the JSON report."""

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mokd_fast.core.checkpoint_io import (
    describe_contents,
    load_file,
)
from mokd_fast.core.distributed import DistContext, init_distributed, shutdown
from mokd_fast.core.errors import UsageError
from mokd_fast.eval.data import Split, default_resize, open_splits
from mokd_fast.eval.extract import ExtractSettings, extract_features
from mokd_fast.eval.features import FeatureNet
from mokd_fast.models.weights import LoadedBackbone, load_backbone

FEATURE_FILES = ("trainfeat.pth", "testfeat.pth", "trainlabels.pth", "testlabels.pth")  # official dump names


@dataclass
class Setup:
    """A resolved evaluation: process, backbone, data and extraction settings."""

    ctx: DistContext
    backbone: LoadedBackbone | None
    train: Split | None
    val: Split | None
    val_to_train: torch.Tensor | None
    extract: ExtractSettings
    store: torch.device


def setup(args: argparse.Namespace, need_data: bool) -> Setup:
    """Joins the process group, loads the backbone and opens the splits; errors name the flag."""
    ctx = init_distributed(args.device, args.dist_url)
    cuda = ctx.device.type == "cuda"
    backbone = train = val = val_to_train = None
    if need_data:
        torch.manual_seed(args.seed)  # a random-initialisation baseline is the same on every rank and run
        backbone = load_backbone(args.pretrained_weights, args.checkpoint_key, args.arch, args.patch_size,
                                 trust=args.trust_checkpoint)
        train, val, val_to_train = open_splits(args.data_path, args.data_format)
        backbone.module.to(ctx.device)
        if cuda and backbone.kind == "cnn":
            backbone.module.to(memory_format=torch.channels_last)
    extract = ExtractSettings(args.input_size, args.resize_size or default_resize(args.input_size),
                              args.batch_size_per_gpu, args.num_workers,
                              bf16=cuda and args.precision in ("auto", "bf16"),
                              channels_last=cuda and backbone is not None and backbone.kind == "cnn")
    store = ctx.device if args.use_cuda else torch.device("cpu")
    return Setup(ctx, backbone, train, val, val_to_train, extract, store)


def labelled_features(s: Setup, net: FeatureNet) -> dict[str, Any] | None:
    """L2-normalised train and val features with labels (val labels in train's classes), on rank 0."""
    train_f, train_s = extract_features(net, s.train, s.extract, s.ctx.rank, s.ctx.world_size, s.ctx.device, s.store)
    val_f, val_s = extract_features(net, s.val, s.extract, s.ctx.rank, s.ctx.world_size, s.ctx.device, s.store)
    if not s.ctx.is_main:
        return None
    images = len(s.train) + len(s.val)
    return {
        "train_features": F.normalize(train_f, dim=1), "train_labels": s.train.labels.to(s.store),
        "val_features": F.normalize(val_f, dim=1), "val_labels": s.val_to_train[s.val.labels].to(s.store),
        "num_classes": len(s.train.classes), "extract_seconds": round(train_s + val_s, 3),
        "features_per_second": round(images / (train_s + val_s), 1),
    }


def dump_features(folder: str, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """The official dump (four tensors) plus ``features.json`` saying what they are."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, key in zip(FEATURE_FILES, ("train_features", "val_features", "train_labels", "val_labels")):
        torch.save(data[key].cpu(), out / name)
    (out / "features.json").write_text(json.dumps({**meta, "num_classes": data["num_classes"]}, indent=2) + "\n")


def load_dumped_features(folder: str, device: torch.device) -> dict[str, Any]:
    """Features from ``--dump_features`` (or the official ``--dump_features``) in ``folder``.

    Raises:
        UsageError: A file is missing, broken, or does not fit the others.
    """
    root = Path(folder)
    missing = [n for n in FEATURE_FILES if not (root / n).exists()]
    if missing:
        raise UsageError(f"--load_features {root} lacks {missing}; write it with --dump_features")
    train_f, val_f, train_y, val_y = (load_file(root / n, "--load_features", map_location=device) for n in FEATURE_FILES)
    for name, value in zip(FEATURE_FILES, (train_f, val_f, train_y, val_y)):
        if not isinstance(value, torch.Tensor):
            raise UsageError(f"--load_features {root / name} holds {describe_contents(value)}, not a tensor; "
                             "write the folder with --dump_features")
    if train_f.ndim != 2 or val_f.ndim != 2 or len(train_f) != len(train_y) or len(val_f) != len(val_y) or train_f.shape[1:] != val_f.shape[1:]:
        raise UsageError(f"--load_features {root}: the four files do not belong together (features "
                         f"{tuple(train_f.shape)} and {tuple(val_f.shape)}, labels {len(train_y)} and {len(val_y)})")
    meta_path = root / "features.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    num_classes = meta.get("num_classes", int(max(train_y.max(), val_y.max())) + 1)
    return {"train_features": F.normalize(train_f.float(), dim=1), "train_labels": train_y.long(),
            "val_features": F.normalize(val_f.float(), dim=1), "val_labels": val_y.long(),
            "num_classes": num_classes, "meta": meta}


def describe(args: argparse.Namespace, s: Setup) -> dict[str, Any]:
    """What was evaluated, for the JSON report and the feature dump."""
    b = s.backbone
    return {
        "pretrained_weights": args.pretrained_weights, "checkpoint_key": args.checkpoint_key,
        "arch": b.arch if b else args.arch, "patch_size": b.patch_size if b else args.patch_size,
        "epoch": b.epoch if b else None, "data_path": args.data_path,
        "train_images": len(s.train) if s.train else None, "val_images": len(s.val) if s.val else None,
        "input_size": args.input_size, "resize_size": s.extract.resize_size,
        "avgpool_patchtokens": args.avgpool_patchtokens, "world_size": s.ctx.world_size,
        "device": torch.cuda.get_device_name(s.ctx.device) if s.ctx.device.type == "cuda" else "cpu",
        "bf16": s.extract.bf16,
    }


def write_json(folder: str, name: str, record: dict[str, Any]) -> Path:
    """Writes ``record`` to ``folder/name`` and returns the path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def run_tool(name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs an evaluation tool: a usage error is one line on stderr and status 2; the process group is left."""
    try:
        return run(args)
    except UsageError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown()
