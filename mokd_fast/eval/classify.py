"""``tools/eval_classifiers.py``: top-1/top-5 of every classifier of a supervised (L-MCL) checkpoint on a labelled split.

The official L-MCL scripts report, on the validation set, the accuracy of every network at every
stage (the three auxiliary classifiers and the final one) and select by the best of them; here the
aggregated (ensemble) classifier of each network is reported too. Validation transform: shorter
side to 256 (bicubic) and a 224 centre crop, as the official ``test()``.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from mokd_fast.core.checkpoint_io import (
    describe_contents,
    load_file,
)
from mokd_fast.core.errors import UsageError
from mokd_fast.eval.data import default_resize, open_split, split_batches
from mokd_fast.methods.lmcl.networks import Aggregator, AuxResNet


def load_classifiers(path: str | Path, trust: bool = False) -> tuple[list[AuxResNet], Aggregator, list[str]]:
    """The networks and aggregator of an L-MCL checkpoint, in eval mode.

    The file is read as data (``load_file``) unless ``trust`` (``--trust_checkpoint``).

    Raises:
        UsageError: A missing, broken or refused file, not an L-MCL checkpoint (the keys present are
            named), or weights that do not fit the architectures it records.
    """
    ckpt = load_file(path, "--checkpoint", trust=trust)
    names = sorted(k for k in ckpt if str(k).startswith("net_")) if isinstance(ckpt, dict) else []
    if not names or not isinstance(ckpt.get("lmcl_heads"), dict):
        raise UsageError(f"--checkpoint {path} is not an L-MCL checkpoint (no net_i and lmcl_heads entries; it holds "
                         f"{describe_contents(ckpt)})")
    nets, archs = [], []
    try:
        for name in names:
            arch = ckpt.get(f"arch_{name.removeprefix('net_')}")
            classes = ckpt[name]["backbone.fc.weight"].shape[0]
            net = AuxResNet(arch, classes)
            net.load_state_dict(ckpt[name])
            nets.append(net.eval())
            archs.append(arch)
        aggregator = Aggregator([net.width for net in nets], stages=4)
        aggregator.load_state_dict(ckpt["lmcl_heads"]["aggregator"])
    except (KeyError, RuntimeError, ValueError) as err:  # a missing entry, or weights of another shape
        problem = " ".join(str(err).split())[:300]
        raise UsageError(f"--checkpoint {path}: its L-MCL entries do not fit the architectures it records "
                         f"({type(err).__name__}: {problem})") from err
    return nets, aggregator.eval(), archs


@torch.no_grad()
def evaluate(nets: list[AuxResNet], aggregator: Aggregator, batches, device: torch.device) -> dict[str, Any]:
    """``{net_i: {stage_s | aggregated: {top1, top5}}}`` in percent over ``batches`` of (images, labels, index)."""
    nets = [net.to(device) for net in nets]
    aggregator = aggregator.to(device)
    classes = nets[0].backbone.fc.out_features
    k = min(5, classes)
    correct = [[torch.zeros(2, device=device) for _ in range(5)] for _ in nets]  # per stage + aggregated
    total = 0
    for images, labels, index in batches:
        keep = index >= 0  # drop the padding rows
        images, labels = images[keep], labels[keep]
        feats, logits = zip(*(net(images) for net in nets))
        aggregated = aggregator(list(feats), list(logits))
        for i in range(len(nets)):
            for s, out in enumerate([*logits[i], aggregated[i]]):
                top = out.topk(k, dim=1).indices  # [B, k]
                hit = top == labels[:, None]
                correct[i][s] += torch.stack([hit[:, 0].sum(), hit.any(dim=1).sum()]).float()
        total += len(labels)
    if total == 0:
        raise UsageError("the evaluation split holds no images")
    names = ["stage_1", "stage_2", "stage_3", "final", "aggregated"]
    return {f"net_{i + 1}": {name: {"top1": round(100 * c[0].item() / total, 2), f"top{k}": round(100 * c[1].item() / total, 2)}
                             for name, c in zip(names, per)} for i, per in enumerate(correct)} | {"images": total}


def run(args: argparse.Namespace) -> int:
    """Evaluates as parsed flags (``eval.cli.classifiers_parser``) say; returns the exit status (2: usage error)."""
    try:
        nets, aggregator, archs = load_classifiers(args.checkpoint, args.trust_checkpoint)
        split = open_split(args.data_path)
        classes = nets[0].backbone.fc.out_features
        if len(split.classes) != classes:
            raise UsageError(f"--data_path {args.data_path} has {len(split.classes)} classes but the networks were "
                             f"trained on {classes}; give the matching split (class folders named as in training)")
        device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
        batches = split_batches(split, args.input_size, default_resize(args.input_size), False, args.batch_size, 0, 1,
                                device, args.num_workers)
        result = evaluate(nets, aggregator, batches, device)
    except UsageError as err:
        print(f"eval_classifiers.py: error: {err}", file=sys.stderr)
        return 2
    for i, arch in enumerate(archs, start=1):
        row = "  ".join(f"{name} {acc['top1']:.2f}" for name, acc in result[f"net_{i}"].items())
        print(f"net_{i} ({arch}) top-1: {row}")
    out = Path(args.output_dir) / "classifiers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "data_path": args.data_path, "archs": archs, **result},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0
