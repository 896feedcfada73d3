"""CNN backbones for MOKD's CNN branch: official torchvision aliases plus any timm CNN.

The branch needs two things from a CNN: its last feature map (the T-head's input) and the
global-average-pooled feature (the DINO head's input).
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
import torch.nn as nn
import torchvision.models as tvm

# The names the official code accepts. Built through torchvision so that state-dict keys equal the
# official ones (its ResNet subclasses torchvision's) and official weights load without renaming.
CNN_ALIASES: dict[str, Callable[[], tvm.ResNet]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
    "resnet152": tvm.resnet152,
    "resnext50_32x4d": tvm.resnext50_32x4d,
    "resnext101_32x8d": tvm.resnext101_32x8d,
    "wide_resnet50_2": tvm.wide_resnet50_2,
    "wide_resnet101_2": tvm.wide_resnet101_2,
}


@dataclass(frozen=True)
class CNNBackbone:
    """A built CNN and how to read its last feature map.

    Attributes:
        module: The network, classifier removed; its state-dict keys are the backbone's keys.
        num_features: Channels of the last feature map.
        reduction: Input pixels per feature-map cell (32 for ResNets), sizing the T-head grid.
        feature_map: ``feature_map(module, x [B, 3, H, W]) -> [B, C, H / r, W / r]``.
    """

    module: nn.Module
    num_features: int
    reduction: int
    feature_map: Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _torchvision_resnet_map(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _timm_map(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_features(x)


def unknown_name_error(kind: str, name: str, aliases: list[str], candidates: list[str]) -> ValueError:
    """An error that names the bad value, the official aliases and the closest timm names."""
    close = difflib.get_close_matches(name, aliases + candidates, n=5, cutoff=0.6)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    return ValueError(
        f"unknown {kind} architecture {name!r}. Valid: the official aliases {', '.join(aliases)}, "
        f"or a timm model name (see timm.list_models()).{hint}"
    )


def small_image_stem(net: nn.Module) -> nn.Module:
    """Gives a torchvision ResNet the CIFAR stem in place: a 3x3 stride-1 ``conv1`` and no max-pool.

    DoGo's official encoder does this below 100 px, so a 32-px image keeps a 4x4 final map instead
    of 1x1; the evaluation tools rebuild it when a checkpoint's ``conv1`` is 3x3.
    """
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_cnn(name: str) -> CNNBackbone:
    """Builds a randomly initialised CNN by official alias or timm name.

    Raises:
        ValueError: The name is unknown, or the timm model does not produce an NCHW feature map.
    """
    if name in CNN_ALIASES:
        net = CNN_ALIASES[name]()
        width = net.fc.in_features
        net.fc = nn.Identity()
        return CNNBackbone(net, width, 32, _torchvision_resnet_map)
    if not timm.is_model(name):
        raise unknown_name_error("CNN (--arch_cnn)", name, list(CNN_ALIASES), timm.list_models())
    net = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    reduction = net.feature_info[-1]["reduction"] if getattr(net, "feature_info", None) else 32
    # One image at the model's native size tells a feature map from a token sequence.
    probe = torch.zeros(1, *net.pretrained_cfg.get("input_size", (3, 224, 224)))
    was_training = net.training
    with torch.no_grad():
        out = _timm_map(net.eval(), probe)
    net.train(was_training)
    if out.ndim != 4 or out.shape[1] != net.num_features:
        raise ValueError(
            f"--arch_cnn {name!r}: timm's forward_features returns shape {tuple(out.shape)}, not an "
            f"NCHW feature map with {net.num_features} channels; pick a convolutional network "
            "(resnet*, convnext*, efficientnet*, regnet*, ...)."
        )
    return CNNBackbone(net, net.num_features, reduction, _timm_map)
