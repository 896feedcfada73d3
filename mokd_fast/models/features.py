"""Any backbone as ``[N, 3, H, W] -> [N, d]`` features: a CNN's pooled last map or a ViT's CLS token.

The methods whose networks are "a backbone and a head" (DoGo's peers, SEED's student and teacher)
build their backbones here, so an official torchvision alias, a timm CNN and a ViT are all accepted
the same way, with the state-dict keys the evaluation tools read.
"""

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
import torch.nn as nn
import torchvision.models as tvm

from mokd_fast.models.cnn import build_cnn
from mokd_fast.models.vit import VIT_ALIASES, build_vit, vit_tokens


@dataclass(frozen=True)
class FeatureBackbone:
    """A built backbone and how to read its feature vector.

    Attributes:
        module: The network (classifier removed); its state-dict keys are the backbone's keys.
        width: Feature width d.
        kind: ``cnn`` or ``vit``.
        features: ``features(module, x [N, 3, H, W]) -> [N, d]``.
    """

    module: nn.Module
    width: int
    kind: str
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]


def is_timm_vit(arch: str) -> bool:
    """A timm model defined with the VisionTransformer class (vision_transformer.py, deit.py)."""
    return timm.is_model(arch) and timm.models.model_entrypoint(arch).__module__ in (
        "timm.models.vision_transformer", "timm.models.deit")


def cls_token_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[N, C]``: the ViT's normalised CLS token, its feature for every method and evaluation."""
    return vit_tokens(net, x)[0]


def build_feature_backbone(arch: str, patch_size: int = 16, drop_path_rate: float = 0.0) -> FeatureBackbone:
    """A randomly initialised backbone by official alias or timm name, with its feature reader.

    Raises:
        ValueError: The name is unknown (the message lists what is accepted).
    """
    if arch in VIT_ALIASES or is_timm_vit(arch):
        vit = build_vit(arch, patch_size, drop_path_rate)
        return FeatureBackbone(vit, vit.embed_dim, "vit", cls_token_features)
    cnn = build_cnn(arch)
    feature_map = cnn.feature_map
    return FeatureBackbone(cnn.module, cnn.num_features, "cnn",
                           lambda net, x: feature_map(net, x).mean(dim=(2, 3)))  # [N, C, h, w] -> [N, C]


def cnn_pooled(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` global average of the last feature map: the DINO head's input during pre-training."""
    if isinstance(module, tvm.ResNet):  # the stages without fc, which a classifier (L-MCL's networks) keeps
        x = module.maxpool(module.relu(module.bn1(module.conv1(x))))
        x = module.layer4(module.layer3(module.layer2(module.layer1(x))))  # [B, C, h, w]
        return torch.flatten(module.avgpool(x), 1)
    return module.forward_features(x).mean(dim=(2, 3))
