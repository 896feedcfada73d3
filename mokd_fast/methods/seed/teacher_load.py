"""Loading SEED's teacher from any of the checkpoint formats people distil from.

Formats (``--teacher_format``, detected from the keys by default):
- ``ours``: a checkpoint of this project (MOKD, DoGo, SEED, or an export); ``--teacher_key`` picks
  the model. Its backbone, and where the entry has one, its projection: MOKD's DINO-head MLP up to
  the bottleneck (before the L2 normalisation and the prototypes), DoGo's SimCLR head or SimSiam
  projector.
- ``moco``: an official MoCo v1/v2 checkpoint (``state_dict`` of ``module.encoder_q.*``), a
  torchvision ResNet with its fc MLP (v2: ``2048 -> 2048 -> ReLU -> 128``), as SEED's
  ``load_moco_teacher_encoder`` takes the query encoder.
- ``swav``: an official SwAV ResNet-50/w2/w4/w5 (``module.*``), its projection head, the prototypes
  dropped (SEED's ``load_swav_teacher_encoder``).
- ``timm``: a plain timm/torchvision state dict of ``--teacher_arch``; the pooled feature.
Unlike the official loaders, which update the model's own state dict and so keep random values for
any key the file lacks, every key must be found with its shape; a mismatch names the missing,
unexpected and misshaped keys and the architecture expected.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torchvision.models.resnet import ResNet

from mokd_fast.core.checkpoint_io import load_file
from mokd_fast.core.errors import UsageError
from mokd_fast.methods.seed.config import SEEDConfig
from mokd_fast.methods.seed.swav_resnet import swav_resnet50
from mokd_fast.methods.seed.teacher import FrozenTeacher
from mokd_fast.models.cnn import CNN_ALIASES
from mokd_fast.models.features import (
    build_feature_backbone,
    cls_token_features,
    cnn_pooled,
)
from mokd_fast.models.weights import (
    backbone_entries,
    backbone_from_state,
    is_state_dict,
    select_state,
)

OUR_KEYS = ("teacher_cnn", "teacher_vit", "student_cnn", "student_vit", "peer_1", "peer_2", "student", "net_1", "net_2")
MOCO_PREFIX = "module.encoder_q."
# Head entries of our checkpoints, after module./backbone. handling: prefix -> activation between its layers.
OUR_HEADS = {"head.mlp.": nn.GELU, "head.net.": nn.ReLU, "head.projector.": nn.ReLU, "head.": nn.ReLU}


def _check_load(module: nn.Module, state: dict[str, torch.Tensor], where: str, expected: str) -> None:
    """``module.load_state_dict(state)`` after naming every missing, unexpected or misshaped key."""
    own = module.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise UsageError(f"--teacher {where} does not fit {expected}: {len(missing)} missing keys {missing[:4]}, "
                         f"{len(unexpected)} unexpected {unexpected[:4]}, {len(wrong)} of another shape {wrong[:2]}; "
                         "check --teacher_format, --teacher_arch and --teacher_key")
    module.load_state_dict(state)


def mlp_from_state(state: dict[str, torch.Tensor], activation: type[nn.Module]) -> nn.Sequential:
    """A ``nn.Sequential`` MLP rebuilt from its weights (keys ``{i}.weight``...), activations in the index gaps.

    2-d weights are Linear layers (with a bias when the state has one), 1-d weights with running
    statistics BatchNorm1d; an index with no weights is ``activation`` (ReLU, GELU), which is how
    every MLP head here is laid out (MoCo's fc, SwAV's projection head, DINO's MLP, DoGo's heads).

    Raises:
        ValueError: A key is not ``{index}.{name}`` or a layer is neither kind.
    """
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        index, _, name = key.partition(".")
        if not index.isdigit():
            raise ValueError(f"head key {key!r} is not '<index>.<name>'")
        layers.setdefault(int(index), {})[name] = value
    modules: list[nn.Module] = []
    for i in range(max(layers) + 1):
        entry = layers.get(i)
        if entry is None:
            modules.append(activation())
        elif entry["weight"].ndim == 2:
            out_dim, in_dim = entry["weight"].shape
            modules.append(nn.Linear(in_dim, out_dim, bias="bias" in entry))
        elif "running_mean" in entry:
            modules.append(nn.BatchNorm1d(entry["weight"].shape[0]))
        else:
            raise ValueError(f"head layer {i} with keys {sorted(entry)} is neither a Linear nor a BatchNorm1d")
    mlp = nn.Sequential(*modules)
    mlp.load_state_dict(state)
    return mlp


def detect_format(ckpt: Any) -> str:
    """``ours``, ``moco``, ``swav`` or ``timm`` from a loaded checkpoint's keys."""
    if isinstance(ckpt, dict) and ("mokd_fast" in ckpt or any(k in ckpt for k in OUR_KEYS)):  # any method's training checkpoint
        return "ours"
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if isinstance(state, dict) and any(str(k).startswith(MOCO_PREFIX) for k in state):
        return "moco"
    if isinstance(state, dict) and any(str(k).removeprefix("module.").startswith(("prototypes", "projection_head"))
                                       for k in state):
        return "swav"
    return "timm"


def _resnet_feature(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x)  # torchvision ResNet with fc = Identity: [N, C] pooled


def _moco(ckpt: Any, path: str, arch: str | None, use_head: bool) -> FrozenTeacher:
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix(MOCO_PREFIX): v for k, v in state.items() if k.startswith(MOCO_PREFIX)}
    arch = arch or (ckpt.get("arch") if isinstance(ckpt.get("arch"), str) else None) or "resnet50"
    if arch not in CNN_ALIASES:
        raise UsageError(f"--teacher {path}: a MoCo teacher is a torchvision ResNet ({', '.join(CNN_ALIASES)}), "
                         f"not --teacher_arch {arch!r}")
    net = CNN_ALIASES[arch]()
    net.fc = nn.Identity()
    _check_load(net, {k: v for k, v in state.items() if not k.startswith("fc.")}, path, f"MoCo {arch}")
    head_state = {k.removeprefix("fc."): v for k, v in state.items() if k.startswith("fc.")}
    head = None
    if use_head and head_state:
        head = mlp_from_state({k if k[0].isdigit() else f"0.{k}": v for k, v in head_state.items()}, nn.ReLU)
    dim = head[-1].out_features if head is not None else _width(net)
    what = f"MoCo {arch} query encoder" + (f" + MLP ({dim}-d)" if head is not None else f" ({dim}-d pooled)")
    return FrozenTeacher(net, _resnet_feature, head, dim, f"{what} from {path}")


def _swav(ckpt: Any, path: str, use_head: bool) -> FrozenTeacher:
    state = ckpt.get("state_dict", ckpt) if is_state_dict(ckpt.get("state_dict")) else ckpt
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("prototypes")}
    conv1 = state.get("conv1.weight")
    if conv1 is None:
        raise UsageError(f"--teacher {path}: no conv1.weight, so not a SwAV ResNet; check --teacher_format")
    width = conv1.shape[0] // 64
    net = swav_resnet50(width)
    _check_load(net, {k: v for k, v in state.items() if not k.startswith("projection_head")}, path,
                f"SwAV ResNet-50w{width}")
    head_state = {k.removeprefix("projection_head."): v for k, v in state.items() if k.startswith("projection_head.")}
    head = None
    if use_head and head_state:
        head = mlp_from_state({k if k[0].isdigit() else f"0.{k}": v for k, v in head_state.items()}, nn.ReLU)
    dim = head[-1].out_features if head is not None else 2048 * width
    name = "resnet50" if width == 1 else f"resnet50w{width}"
    what = f"SwAV {name}" + (f" + projection ({dim}-d)" if head is not None else f" ({dim}-d pooled)")
    return FrozenTeacher(net, _resnet_feature, head, dim, f"{what} from {path}")


def _width(net: nn.Module) -> int:
    """Pooled feature width of a torchvision ResNet."""
    last = net.layer4[-1]
    return last.conv3.out_channels if hasattr(last, "conv3") else last.conv2.out_channels


def _reader(module: nn.Module) -> tuple[Callable[[nn.Module, torch.Tensor], torch.Tensor], int]:
    """How the evaluation tools read a loaded backbone's feature (CLS token, pooled map), and its width."""
    if hasattr(module, "patch_embed"):
        return cls_token_features, module.embed_dim
    if isinstance(module, ResNet):
        return _resnet_feature, _width(module)
    return cnn_pooled, module.num_features


def _ours(ckpt: Any, path: str, key: str | None, arch: str | None, embedding: str) -> FrozenTeacher:
    state, saved_arch = select_state(ckpt, key, path, "--teacher", "--teacher_key")
    where = f"{path}[{key!r}]" if key else path
    if arch and saved_arch and arch != saved_arch:
        raise UsageError(f"--teacher {where} was trained as {saved_arch!r} but --teacher_arch is {arch!r}; "
                         "drop --teacher_arch")
    arch = arch or saved_arch
    if not arch:
        raise UsageError(f"--teacher {where} does not record its architecture; pass --teacher_arch")
    module = backbone_from_state(backbone_entries(state), arch, f"--teacher {where}")
    features, width = _reader(module)
    plain = {k.removeprefix("module."): v for k, v in state.items()}
    head = None
    if embedding != "backbone":
        for prefix, activation in OUR_HEADS.items():
            head_state = {k.removeprefix(prefix): v for k, v in plain.items() if k.startswith(prefix)}
            if head_state and all(k.partition(".")[0].isdigit() for k in head_state):
                head = mlp_from_state(head_state, activation)
                break
        if head is None and embedding == "head":
            raise UsageError(f"--teacher {where} has no projection head this loader knows; use "
                             "--teacher_embedding backbone")
    if head is not None and head[0].in_features != width:
        raise UsageError(f"--teacher {where}: its head takes {head[0].in_features}-d inputs but the {arch} backbone "
                         f"gives {width}-d features (DoGo's keep_fc?); use --teacher_embedding backbone")
    dim = head[-1].out_features if head is not None else width
    what = f"{arch} ({key})" + (f" + head ({dim}-d)" if head is not None else f" ({dim}-d pooled)")
    return FrozenTeacher(module, features, head, dim, f"{what} from {path}")


def _timm(state: Any, path: str, arch: str | None) -> FrozenTeacher:
    if not is_state_dict(state):
        raise UsageError(f"--teacher {path} is not a state dict, nor one of our, MoCo's or SwAV's checkpoints")
    if not arch:
        raise UsageError(f"--teacher {path} is a plain state dict: name its architecture with --teacher_arch")
    module = backbone_from_state(backbone_entries(state), arch, f"--teacher {path}")
    features, width = _reader(module)
    return FrozenTeacher(module, features, None, width, f"{arch} ({width}-d pooled) from {path}")


def random_teacher(cfg: SEEDConfig, seed: int = 0) -> FrozenTeacher:
    """A randomly initialised teacher of ``--teacher_arch`` for benchmarks and tests, drawn from ``seed`` (so a
    resumed run rebuilds the same one): with ``--teacher_format moco`` a MoCo-v2 torchvision ResNet with its
    128-d MLP, otherwise the pooled backbone."""
    arch = cfg.teacher_arch
    moco = cfg.teacher_format == "moco" and cfg.teacher_embedding != "backbone"
    if moco and arch not in CNN_ALIASES:
        raise UsageError(f"--teacher_format moco needs a torchvision ResNet --teacher_arch, not {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if moco:
            net = CNN_ALIASES[arch]()
            net.fc = nn.Identity()
            width = _width(net)
            head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 128))
            return FrozenTeacher(net, _resnet_feature, head, 128, f"random MoCo-v2 {arch} + MLP (128-d), benchmark only")
        backbone = build_feature_backbone(arch)
    return FrozenTeacher(backbone.module, backbone.features, None, backbone.width,
                         f"random {arch} ({backbone.width}-d pooled), benchmark only")


def load_teacher(cfg: SEEDConfig, seed: int = 0, trust: bool = False) -> FrozenTeacher:
    """The teacher ``cfg`` names, frozen, on the CPU (``seed`` draws a random one when no file is given).

    The file is read as data (``load_file``): a ``.pth`` or a ``.safetensors``; ``trust``
    (``--trust_checkpoint``) reads a ``.pth`` with the full unpickler.

    Raises:
        UsageError: No such file, an unreadable or unknown format, a missing key or architecture, or
            weights that do not fit; the message names the flag and what to do.
    """
    if not cfg.teacher:
        if not cfg.teacher_arch:
            raise UsageError("--teacher: give the teacher's checkpoint (or, for a benchmark, --teacher_arch for a "
                             "randomly initialised teacher)")
        return random_teacher(cfg, seed)
    path = cfg.teacher
    ckpt = load_file(path, "--teacher", trust=trust)
    fmt = detect_format(ckpt) if cfg.teacher_format == "auto" else cfg.teacher_format
    use_head = cfg.teacher_embedding != "backbone"
    if fmt == "ours":
        return _ours(ckpt, path, cfg.teacher_key, cfg.teacher_arch, cfg.teacher_embedding)
    if not isinstance(ckpt, dict):
        raise UsageError(f"--teacher {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if fmt == "moco":
        return _moco(ckpt, path, cfg.teacher_arch, use_head)
    if fmt == "swav":
        return _swav(ckpt, path, use_head)
    return _timm(ckpt.get("state_dict", ckpt) if is_state_dict(ckpt.get("state_dict")) else ckpt, path,
                 cfg.teacher_arch)
