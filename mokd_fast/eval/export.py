"""``tools/export.py``: a backbone out of a training checkpoint, in the layout another library loads.

- ``timm``: a plain state dict that ``timm.create_model(NAME, num_classes=0)`` loads with no missing
  or unexpected key (our CNN aliases are torchvision ResNets, whose keys timm's ResNets share; our
  ViT aliases are timm VisionTransformers). ``.safetensors`` outputs are written as safetensors.
- ``torchvision``: a plain state dict for the torchvision ResNet of that name with ``fc = Identity()``.
- ``official``: ``{KEY: {"backbone.*": ...}, "epoch", "arch_cnn"|"arch_vit"}``, which the official
  ``eval_knn.py``/``eval_linear.py --checkpoint_key KEY`` read (they strip ``backbone.``).

Every export is loaded back into its target before the command reports success.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision.models as tvm
from torch import nn

from mokd_fast.core.errors import UsageError
from mokd_fast.models.cnn import CNN_ALIASES
from mokd_fast.models.vit import VIT_ALIASES
from mokd_fast.models.weights import LoadedBackbone, load_backbone


def timm_target(backbone: LoadedBackbone) -> tuple[str, dict[str, Any]]:
    """The timm model name (and constructor overrides) with exactly this backbone's architecture."""
    if backbone.arch in VIT_ALIASES:
        size = backbone.arch.removeprefix("vit_")
        name = f"vit_{size}_patch{backbone.patch_size}_224"
        return (name, {}) if timm.is_model(name) else (f"vit_{size}_patch16_224", {"patch_size": backbone.patch_size})
    if not timm.is_model(backbone.arch):
        raise UsageError(f"timm has no model named {backbone.arch!r}")
    return backbone.arch, {}


def _check_loads(model: nn.Module, state: dict[str, torch.Tensor], target: str) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"{target} does not take the export: missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")


def export(ckpt: str, key: str, fmt: str, out: str, arch: str | None = None, trust: bool = False) -> str:
    """Writes the backbone of ``ckpt[key]`` to ``out`` in ``fmt``; returns how to load it.

    ``ckpt`` is a ``.pth`` or ``.safetensors`` file, read as data unless ``trust`` (``--trust_checkpoint``).

    Raises:
        UsageError: Bad checkpoint, key or architecture, or a format the architecture has no target in.
    """
    backbone = load_backbone(ckpt, key, arch, flag="checkpoint", key_flag="--key", trust=trust)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.module.state_dict().items()}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "timm":
        name, kwargs = timm_target(backbone)
        _check_loads(timm.create_model(name, pretrained=False, num_classes=0, **kwargs), state, f"timm {name}")
        _save(state, path)
        extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        return (f"timm.create_model({name!r}, pretrained=True, num_classes=0{extra}, "
                f"pretrained_cfg_overlay=dict(file={str(path)!r}))")
    if fmt == "torchvision":
        if backbone.arch not in CNN_ALIASES:
            raise UsageError(f"--format torchvision: {backbone.arch!r} is not a torchvision architecture "
                             f"(those are {', '.join(CNN_ALIASES)}); use --format timm")
        model = getattr(tvm, backbone.arch)()
        model.fc = nn.Identity()
        _check_loads(model, state, f"torchvision {backbone.arch}")
        _save(state, path)
        return (f"m = torchvision.models.{backbone.arch}(); m.fc = torch.nn.Identity(); "
                f"m.load_state_dict(torch.load({str(path)!r}))")
    official = {key: {f"backbone.{k}": v for k, v in state.items()}, "epoch": backbone.epoch or 0,
                ("arch_vit" if backbone.kind == "vit" else "arch_cnn"): backbone.arch}
    torch.save(official, path)
    load_backbone(str(path), key, None)
    return f"official eval_knn.py / eval_linear.py --pretrained_weights {path} --checkpoint_key {key}"


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


def run(args: argparse.Namespace) -> int:
    """Exports as parsed flags (``eval.cli.export_parser``) say; returns the exit status (2 for a usage error)."""
    try:
        how = export(args.checkpoint, args.key, args.format, args.out, args.arch, args.trust_checkpoint)
    except UsageError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.key}, {args.format}); load it with:\n  {how}")
    return 0
