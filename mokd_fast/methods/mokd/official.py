"""Reading and writing the official MOKD checkpoint layout.

The official ``main_mokd.py`` saves ``student_cnn``, ``teacher_cnn``, ``student_vit``, ``teacher_vit``
(state dicts of its wrappers: ``backbone.*``, ``head.*``, ``transhead.*``; ``module.`` in front where
it wrapped the model in DDP, which it does for both students and for a teacher that has BatchNorm),
``optimizer_cnn``, ``optimizer_vit``, ``epoch``, ``arch_cnn``, ``arch_vit``, six loss states
``{"center": [1, K]}`` and, with fp16, two grad-scaler states. Weight-normed layers appear as
``weight_g``/``weight_v`` (``nn.utils.weight_norm``); the newer ``parametrizations.weight.original0/1``
form is accepted too.
"""

import os
from typing import Any

import torch
import torch.nn as nn

from mokd_fast.core.checkpoint_io import describe_contents, load_file
from mokd_fast.methods.mokd.losses import CENTERED_TERMS, OFFICIAL_LOSS_STATE

# official key -> (attribute of MOKD, attribute of the pair)
OFFICIAL_MODELS = {
    "student_cnn": ("students", "cnn"),
    "teacher_cnn": ("teachers", "cnn"),
    "student_vit": ("students", "vit"),
    "teacher_vit": ("teachers", "vit"),
}
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _official_prefix(key: str, module: nn.Module) -> str:
    """The prefix the official code's DDP wrapping puts on this model's keys."""
    wrapped = key.startswith("student") or any(isinstance(m, _BATCHNORMS) for m in module.modules())
    return "module." if wrapped else ""


def _canonical_key(key: str) -> str:
    key = key.removeprefix("module.")
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    return key.replace(".parametrizations.weight.original1", ".weight_v")


def export_official(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """The model's weights and centers in the official checkpoint layout.

    The official ``eval_linear.py``/``eval_knn.py`` (``--checkpoint_key teacher_cnn|teacher_vit``)
    strip ``module.`` and ``backbone.`` and find every backbone key; the official trainer resumes
    from it.

    Args:
        model: A ``MOKD`` (its ``students``, ``teachers``, ``criterion`` and ``cfg``; not imported here,
            since ``method.py`` imports this module).
        **extra: Further entries (``epoch``, ``optimizer_cnn``, ...); ``epoch`` defaults to 0.

    Returns:
        A dict ready for ``torch.save``.
    """
    out: dict[str, Any] = {}
    for key, (pair, branch) in OFFICIAL_MODELS.items():
        module = getattr(getattr(model, pair), branch)
        prefix = _official_prefix(key, module)
        out[key] = {prefix + name: t.detach().cpu().clone() for name, t in module.state_dict().items()}
    out["epoch"] = 0
    out["arch_cnn"] = model.cfg.arch_cnn
    out["arch_vit"] = model.cfg.arch_vit
    centers = model.criterion.centers.detach().cpu()
    for official, term in OFFICIAL_LOSS_STATE.items():
        i = CENTERED_TERMS.index(term)
        out[official] = {"center": centers[i : i + 1].clone()}
    out.update(extra)
    return out


def load_official(model: nn.Module, source: str | os.PathLike | dict[str, Any], trust: bool = False) -> dict[str, Any]:
    """Loads the four models and six centers of an official checkpoint into ``model``.

    Args:
        model: A MOKD built with the checkpoint's architectures and ``out_dim``.
        source: Path to the ``.pth`` file or its loaded dict. A file is read as data (``load_file``:
            tensors, containers, the official ``args`` Namespace and NumPy values, nothing else).
        trust: Read the file with the full unpickler instead: only for a file you trust.

    Returns:
        The remaining entries (``epoch``, ``optimizer_cnn``, ``optimizer_vit``, scaler states, ...)
        for a trainer that resumes.

    Raises:
        UsageError: The file is missing, broken, or asks its unpickler for more than data.
        ValueError: A model key is missing, the architectures differ, or a tensor's shape differs;
            the message names the value and what this model expects.
    """
    name = str(source) if not isinstance(source, dict) else "the checkpoint dict"
    ckpt = source if isinstance(source, dict) else load_file(source, "checkpoint", trust=trust)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{name} holds {describe_contents(ckpt)}, not an official MOKD checkpoint")
    missing_models = [k for k in OFFICIAL_MODELS if k not in ckpt]
    if missing_models:
        raise ValueError(
            f"{name} lacks {missing_models}; an official MOKD checkpoint has "
            f"{list(OFFICIAL_MODELS)}. Keys present: {sorted(ckpt)}"
        )
    for arch in ("arch_cnn", "arch_vit"):
        theirs, ours = ckpt.get(arch), getattr(model.cfg, arch)
        if theirs is not None and theirs != ours:
            raise ValueError(
                f"{name} was trained with {arch}={theirs!r} but this model has {arch}={ours!r}; "
                f"build MOKDConfig({arch}={theirs!r}, ...) to load it"
            )
    for key, (pair, branch) in OFFICIAL_MODELS.items():
        module = getattr(getattr(model, pair), branch)
        state = {_canonical_key(k): v for k, v in ckpt[key].items()}
        own = module.state_dict()
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        if missing or unexpected:
            raise ValueError(
                f"{name}[{key!r}] does not match {model.cfg.arch_cnn if 'cnn' in key else model.cfg.arch_vit}: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
        if wrong:
            k, theirs, ours = wrong[0]
            raise ValueError(
                f"{name}[{key!r}]: {k} has shape {theirs} but this model expects {ours} "
                f"({len(wrong)} tensors differ; check out_dim={model.cfg.out_dim}, patch_size, use_bn_in_head)"
            )
        module.load_state_dict(state)
    with torch.no_grad():
        for official, term in OFFICIAL_LOSS_STATE.items():
            if official in ckpt:
                model.criterion.centers[CENTERED_TERMS.index(term)] = ckpt[official]["center"].reshape(-1)
    return {k: v for k, v in ckpt.items() if k not in OFFICIAL_MODELS and k not in OFFICIAL_LOSS_STATE}
