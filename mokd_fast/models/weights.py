"""Backbone weights out of a checkpoint: ours, the official MOKD one, an export, or a bare state dict.

Unlike the official loader (``strict=False``, which evaluates a half-random network when keys do not
match), every backbone key must be found with its shape; what is wrong is named.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mokd_fast.core.checkpoint_io import load_file
from mokd_fast.core.errors import UsageError
from mokd_fast.models.cnn import CNN_ALIASES, build_cnn, small_image_stem
from mokd_fast.models.vit import VIT_ALIASES, build_vit

# Classifier weights a supervised or exported checkpoint may carry; the frozen backbone drops them.
CLASSIFIER_KEYS = ("fc.weight", "fc.bias", "head.weight", "head.bias", "classifier.weight", "classifier.bias")


@dataclass(frozen=True)
class LoadedBackbone:
    """A backbone with its weights and what it is.

    Attributes:
        module: The network (CNN: classifier removed; ViT: ``num_classes=0``), in eval mode.
        arch: Official alias or timm name.
        kind: ``cnn`` or ``vit``.
        patch_size: The ViT's patch size (0 for a CNN).
        epoch: The checkpoint's ``epoch`` entry, if any.
    """

    module: nn.Module
    arch: str
    kind: str
    patch_size: int
    epoch: int | None


def is_vit_arch(arch: str, state: dict[str, torch.Tensor] | None = None) -> bool:
    """ViT aliases, timm names of ViTs (and DeiTs) and weights with a class token are ViTs."""
    if arch in VIT_ALIASES or (state is not None and "cls_token" in state):
        return True
    return arch not in CNN_ALIASES and any(part in arch.lower() for part in ("vit", "deit"))


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def select_state(ckpt: Any, key: str | None, path: str, file_flag: str = "--pretrained_weights",
                 key_flag: str = "--checkpoint_key") -> tuple[dict[str, torch.Tensor], Any]:
    """The state dict under ``key`` (or the whole file when it is one) and the file's arch entry.

    ``file_flag`` and ``key_flag`` name the flags that chose the file and key, for the messages.
    """
    if is_state_dict(ckpt):
        return ckpt, None
    if not isinstance(ckpt, dict):
        raise UsageError(f"{file_flag} {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    models = sorted(k for k, v in ckpt.items() if is_state_dict(v))
    if key is None:
        raise UsageError(f"{file_flag} {path} holds several state dicts {models}; pick one with {key_flag}")
    if key not in ckpt or not is_state_dict(ckpt[key]):
        raise UsageError(f"{file_flag} {path} has no state dict under {key_flag} {key!r}; "
                         f"it has {models} (all keys: {sorted(ckpt)})")
    arch_entry = f"arch_{key.rsplit('_', 1)[-1]}"  # teacher_cnn -> arch_cnn, student_vit -> arch_vit, peer_1 -> arch_1
    return ckpt[key], ckpt.get(arch_entry, ckpt.get("arch"))


def backbone_entries(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone keys without ``module.``/``backbone.`` (MOKD) or ``encoder.[net.]`` (DoGo); heads are dropped."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for prefix in ("backbone.", "encoder."):
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if state and all(k.startswith("net.") for k in state):  # a DoGo encoder around a timm network
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in CLASSIFIER_KEYS}


def build_backbone(arch: str, patch_size: int, vit: bool | None = None, small_stem: bool = False) -> nn.Module:
    """A randomly initialised backbone as pre-training builds it (teachers: no drop path).

    ``small_stem``: a torchvision ResNet with the CIFAR stem (DoGo below 100 px).
    """
    if is_vit_arch(arch) if vit is None else vit:
        return build_vit(arch, patch_size, 0.0)
    module = build_cnn(arch).module
    return small_image_stem(module) if small_stem else module


def load_backbone(path: str | Path | None, key: str | None, arch: str | None,
                  patch_size: int | None = None, flag: str = "--pretrained_weights",
                  key_flag: str = "--checkpoint_key", trust: bool = False) -> LoadedBackbone:
    """Builds the backbone and loads its weights.

    Args:
        path: Checkpoint file (``.pth`` or ``.safetensors``, read as data by ``load_file``); ``None`` or
            ``""`` evaluates a random initialisation of ``arch``.
        key: ``teacher_cnn``... for a training checkpoint; ignored for a bare state dict.
        arch: Architecture; ``None`` takes the checkpoint's ``arch_cnn``/``arch_vit``.
        patch_size: ViT patch size; ``None`` reads it from the weights (16 for a random ViT alias).
        flag: The flag that named ``path``, and ``key_flag`` the one that named ``key``, for the messages.
        trust: Read a ``.pth`` with the full unpickler (``--trust_checkpoint``).

    Raises:
        UsageError: A missing, broken or refused file, a missing key (the keys present are listed), an architecture that
            contradicts the checkpoint, or weights that do not fit the architecture.
    """
    if not path:
        if arch is None:
            raise UsageError("--arch is needed to evaluate a random initialisation (no --pretrained_weights)")
        module = build_backbone(arch, patch_size or 16)
        return _loaded(module.eval(), arch, None)
    ckpt = load_file(path, flag, trust=trust)
    state, saved_arch = select_state(ckpt, key, str(path), flag, key_flag)
    where = f"{flag} {path}" + (f"[{key!r}]" if key and not is_state_dict(ckpt) else "")
    if arch and saved_arch and arch != saved_arch:
        raise UsageError(f"architecture mismatch: {where} was trained as {saved_arch!r} but --arch is {arch!r}; "
                         f"drop --arch or pass --arch {saved_arch}")
    arch = arch or saved_arch
    if not arch:
        raise UsageError(f"{where} does not record its architecture; pass --arch")
    module = backbone_from_state(backbone_entries(state), arch, where, patch_size)
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) and not is_state_dict(ckpt) else None
    return _loaded(module.eval(), arch, epoch)


def backbone_from_state(state: dict[str, torch.Tensor], arch: str, where: str,
                        patch_size: int | None = None) -> nn.Module:
    """Builds ``arch`` and loads ``state`` (backbone keys only) into it, every key and shape checked.

    The patch size of a ViT and the CIFAR stem of a torchvision ResNet are read from the weights.

    Args:
        state: Backbone weights, prefixes already removed.
        arch: Official alias or timm name.
        where: The weights' origin, for messages (``file[key]``).
        patch_size: The ViT patch size asked for; ``None`` reads it from the weights.

    Raises:
        UsageError: The weights do not fit ``arch``: the missing, unexpected and misshaped keys are named.
    """
    proj = state.get("patch_embed.proj.weight")
    saved_patch = int(proj.shape[-1]) if proj is not None and proj.ndim == 4 else None
    if patch_size and saved_patch and patch_size != saved_patch:
        raise UsageError(f"architecture mismatch: {where} has {saved_patch}x{saved_patch} patches but "
                         f"--patch_size is {patch_size}")
    conv1 = state.get("conv1.weight")
    small_stem = arch in CNN_ALIASES and conv1 is not None and conv1.shape[-1] == 3  # DoGo's CIFAR stem
    module = build_backbone(arch, patch_size or saved_patch or 16, is_vit_arch(arch, state), small_stem)
    own = module.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise UsageError(
            f"architecture mismatch: {where} does not fit {arch!r}: {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected {unexpected[:4]}, {len(wrong)} of another shape "
            f"{wrong[:2]}; check --arch (and --patch_size for a ViT)")
    module.load_state_dict(state)
    return module


def _loaded(module: nn.Module, arch: str, epoch: Any) -> LoadedBackbone:
    vit = hasattr(module, "patch_embed")
    patch = int(module.patch_embed.patch_size[0]) if vit else 0
    return LoadedBackbone(module, arch, "vit" if vit else "cnn", patch, int(epoch) if epoch is not None else None)
