"""DoGo's peers: an encoder and a SimCLR or SimSiam head, as the official ``models/`` build them.

Official structure (NeurAI-Lab/DoGo ``dogo``: models/helper.py, simclr.py, simsiam.py), for its
torchvision ResNets (any timm CNN or ViT works too, with pooled or CLS features):
- encoder below 100 px: the torchvision ResNet with a 3x3 stride-1 first convolution and no max-pool
  (the CIFAR stem), features pooled (512-d for ResNet-18); at 100 px and above the official encoder
  keeps the ResNet's fc layer, so its "feature" is the 1000-d classifier output (``keep_fc``, a
  quirk kept as an option; pooled features otherwise);
- SimCLR head: ``Linear(d, 512, bias=False) -> BN -> ReLU -> Linear(512, n_proj)``;
- SimSiam projector: ``[Linear(d, 2048) -> BN -> ReLU] x 2 -> Linear(2048, 2048) -> BN`` (biases and
  an affine last BN, unlike the SimSiam paper's code), predictor ``Linear(2048, 512, bias=False) ->
  BN -> ReLU -> Linear(512, n_proj)``.
Every output is L2-normalised, as the official forwards return them. Each view is its own forward
pass (BatchNorm statistics per view), as official.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from mokd_fast.methods.dogo.config import HEADS, SIMSIAM_WIDTH
from mokd_fast.models.cnn import CNN_ALIASES, small_image_stem
from mokd_fast.models.features import build_feature_backbone


class Encoder(nn.Module):
    """``[N, 3, H, W] -> [N, d]`` features of any backbone: a CNN's pooled last map or a ViT's CLS token.

    Args:
        net: The backbone.
        features: ``features(net, x)`` -> ``[N, d]``.
    """

    def __init__(self, net: nn.Module, features) -> None:
        super().__init__()
        self.net = net
        self._features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self.net, x)


def build_encoder(arch: str, small_images: bool, keep_fc: bool = False, patch_size: int = 16) -> tuple[nn.Module, int]:
    """DoGo's encoder, and its feature width.

    A torchvision ResNet alias is built as the official code builds it (the CIFAR stem for small
    images; ``keep_fc`` keeps its 1000-way classifier as the feature). Any other name is a timm or
    official-alias CNN (features pooled from its last map) or ViT (its CLS token), so heterogeneous
    peers (a CNN and a ViT) work; those have no small-image stem.

    Raises:
        ValueError: The name is unknown (the message lists what is accepted).
    """
    if arch in CNN_ALIASES:
        net = CNN_ALIASES[arch]()
        if small_images:
            small_image_stem(net)
        if keep_fc:
            return net, net.fc.out_features
        width = net.fc.in_features
        net.fc = nn.Identity()
        return net, width
    backbone = build_feature_backbone(arch, patch_size)
    return Encoder(backbone.module, backbone.features), backbone.width


class SimCLRHead(nn.Module):
    """``[N, d] -> [N, n_proj]`` projection."""

    def __init__(self, in_dim: int, n_proj: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                 nn.Linear(512, n_proj))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class SimSiamHead(nn.Module):
    """Projector ``[N, d] -> [N, 2048]`` and predictor ``[N, 2048] -> [N, n_proj]``."""

    def __init__(self, in_dim: int, n_proj: int = 2048) -> None:
        super().__init__()
        w = SIMSIAM_WIDTH
        self.projector = nn.Sequential(
            nn.Linear(in_dim, w), nn.BatchNorm1d(w), nn.ReLU(inplace=True),
            nn.Linear(w, w), nn.BatchNorm1d(w), nn.ReLU(inplace=True),
            nn.Linear(w, w), nn.BatchNorm1d(w))
        self.predictor = nn.Sequential(nn.Linear(w, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                       nn.Linear(512, n_proj))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(f)
        return z, self.predictor(z)


class Peer(nn.Module):
    """One DoGo peer: encoder and head; ``forward`` of one view returns its normalised outputs.

    Args:
        arch: Encoder: a torchvision ResNet alias (official), or any timm/official-alias CNN or ViT.
        head: "simclr" or "simsiam".
        n_proj: The head's output width (official template: 128 for SimCLR, 2048 for SimSiam).
        image_size: Input side; below 100 px the CIFAR stem is used, as official.
        keep_fc: At 100 px and above, use the fc-1000 output as the feature (official).
        cifar_stem: Overrides the size rule for the stem (None: the rule).
    """

    def __init__(self, arch: str, head: str, n_proj: int, image_size: int, keep_fc: bool = True,
                 cifar_stem: bool | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"DoGo head {head!r}: choose one of {HEADS}")
        small = image_size < 100
        stem = small if cifar_stem is None else cifar_stem
        self.encoder, width = build_encoder(arch, small_images=stem, keep_fc=keep_fc and not small)
        self.kind = head
        self.head = SimCLRHead(width, n_proj) if head == "simclr" else SimSiamHead(width, n_proj)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` ``[N, 3, H, W]`` -> ``f`` ``[N, d]``, ``z`` ``[N, n]`` and, for SimSiam, ``p``; all L2-normalised."""
        f = self.encoder(x)
        if self.kind == "simclr":
            return {"f": F.normalize(f, dim=1), "z": F.normalize(self.head(f), dim=1)}
        z, p = self.head(f)
        return {"f": F.normalize(f, dim=1), "z": F.normalize(z, dim=1), "p": F.normalize(p, dim=1)}
