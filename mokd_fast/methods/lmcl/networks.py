"""L-MCL's networks (winycg/L-MCL ``models/lmcl_resnet_imagenet.py``, ``models/aggregator.py``,
``models/meta_network.py``, the criterion's ``Embed``): a ResNet with auxiliary classifiers on its
earlier stages, the projection heads, the stage aggregator and the pair-weight network.

``AuxResNet`` is a torchvision ResNet (keys ``backbone.*``, so the evaluation and export tools read
it as any ResNet) plus ``auxiliary.*``: from the outputs of layer1, layer2 and layer3, one block of
each later stage (stride 2, planes 128/256/512, torchvision's block type) rebuilt from scratch, then
average pooling and a classifier each. Its stage features are ``[aux1, aux2, aux3, final]``, each
``[B, 512 x expansion]``, with one logit vector per stage.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from mokd_fast.models.cnn import CNN_ALIASES

STAGE_PLANES = (64, 128, 256, 512)
RESNETS = tuple(name for name in CNN_ALIASES if name.startswith("resnet"))  # plain ResNets, as official


def _stage(block: type, inplanes: int, planes: int) -> nn.Module:
    """One block of ``planes`` with stride 2 and its 1x1 projection shortcut (torchvision's ``_make_layer``)."""
    shortcut = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=2, bias=False),
                             nn.BatchNorm2d(planes * block.expansion))
    return nn.Sequential(block(inplanes, planes, stride=2, downsample=shortcut))


class AuxiliaryClassifiers(nn.Module):
    """Extractors and classifiers on layer1..layer3's maps (``block_extractor{1,2,3}``, ``fc{1,2,3}``)."""

    def __init__(self, block: type, num_classes: int) -> None:
        super().__init__()
        exp = block.expansion
        self.extractors = nn.ModuleList()
        for start in range(3):  # extractor s starts from stage s's output and rebuilds stages s+1..3
            inplanes, stages = STAGE_PLANES[start] * exp, []
            for planes in STAGE_PLANES[start + 1:]:
                stages.append(_stage(block, inplanes, planes))
                inplanes = planes * exp
            self.extractors.append(nn.Sequential(*stages))
        self.classifiers = nn.ModuleList(nn.Linear(512 * exp, num_classes) for _ in range(3))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, maps: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = [ext(x).mean(dim=(2, 3)) for ext, x in zip(self.extractors, maps)]  # [B, 512 exp] each
        return feats, [fc(f) for fc, f in zip(self.classifiers, feats)]


class AuxResNet(nn.Module):
    """A torchvision ResNet with three auxiliary classifiers: four stages of features and logits.

    Raises:
        ValueError: ``arch`` is not a torchvision ResNet alias (the official networks are ResNets).
    """

    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        if arch not in RESNETS:
            raise ValueError(f"L-MCL network {arch!r}: choose a torchvision ResNet ({', '.join(RESNETS)}); the "
                             "auxiliary classifiers copy ResNet stages")
        self.backbone: ResNet = CNN_ALIASES[arch](num_classes=num_classes)
        block = BasicBlock if isinstance(self.backbone.layer1[0], BasicBlock) else Bottleneck
        self.auxiliary = AuxiliaryClassifiers(block, num_classes)
        self.width = 512 * block.expansion

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``x`` ``[B, 3, H, W]`` -> (features, logits), four each: the auxiliary stages, then the final one."""
        net = self.backbone
        f1 = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))
        f2 = net.layer2(f1)
        f3 = net.layer3(f2)
        final = net.layer4(f3).mean(dim=(2, 3))  # [B, 512 exp]
        feats, logits = self.auxiliary([f1, f2, f3])
        return [*feats, final], [*logits, net.fc(final)]


class Embed(nn.Module):
    """``Linear(d, D) -> ReLU -> Linear(D, D)`` then ``x / ||x||`` (the official criterion's head, no epsilon)."""

    def __init__(self, dim_in: int, dim_out: int = 128) -> None:
        super().__init__()
        self.proj_head = nn.Sequential(nn.Linear(dim_in, dim_out), nn.ReLU(inplace=True), nn.Linear(dim_out, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_head(x)
        return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


class Aggregator(nn.Module):
    """Per network, softmax stage weights from its concatenated stage features, and the weighted sum of its stage logits."""

    def __init__(self, widths: list[int], stages: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(stages * d, d), nn.ReLU(inplace=True), nn.Linear(d, stages))
                                   for d in widths)

    def forward(self, feats: list[list[torch.Tensor]], logits: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        out = []
        for head, f, lg in zip(self.heads, feats, logits):
            a = F.softmax(head(torch.cat(f, dim=1)), dim=1)  # [B, S]
            out.append((torch.stack(lg, dim=1) * a[:, :, None]).sum(dim=1))  # [B, C]
        return out


class LossWeightNetwork(nn.Module):
    """Per-sample pair weights ``sigmoid(cos(P_ik f_ik, P_jz f_jz))`` ``[P, B]`` in the official pair order."""

    def __init__(self, widths: list[list[int]], dim: int = 128) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.ModuleList(nn.Linear(d, dim) for d in stage_widths) for stage_widths in widths)

    def forward(self, feats: list[list[torch.Tensor]]) -> torch.Tensor:
        projected = [[F.normalize(p(f), dim=1) for p, f in zip(projs, fs)] for projs, fs in zip(self.proj, feats)]
        n = len(projected)
        weights = [torch.sigmoid((projected[i][k] * projected[j][z]).sum(dim=1))
                   for i in range(n) for j in range(n) if i != j
                   for k in range(len(projected[i])) for z in range(len(projected[j]))]
        return torch.stack(weights)
