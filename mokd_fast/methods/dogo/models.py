"""DoGo's peers: an encoder and a SimCLR or SimSiam head, as the official ``models/`` build them.

Official structure (NeurAI-Lab/DoGo ``dogo``: models/helper.py, simclr.py, simsiam.py):
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

from mokd_fast.models.cnn import CNN_ALIASES

HEADS = ("simclr", "simsiam")
SIMSIAM_WIDTH = 2048  # the projector's width and output, fixed in the official code


def build_encoder(arch: str, small_images: bool, keep_fc: bool = False) -> tuple[nn.Module, int]:
    """A torchvision ResNet as DoGo's encoder, and its feature width.

    Args:
        arch: An official ResNet alias (``resnet18``, ``resnet50``, ...).
        small_images: The CIFAR stem (inputs below 100 px, as official).
        keep_fc: Keep the 1000-way fc layer as the feature (the official encoder at 100 px and above).

    Raises:
        ValueError: ``arch`` is not a torchvision ResNet alias.
    """
    if arch not in CNN_ALIASES or not arch.startswith(("resnet", "wide_resnet", "resnext")):
        raise ValueError(f"DoGo encoder {arch!r}: use a torchvision ResNet alias ({', '.join(CNN_ALIASES)})")
    net = CNN_ALIASES[arch]()
    if small_images:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    if keep_fc:
        return net, net.fc.out_features
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


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
        arch: Encoder (torchvision ResNet alias).
        head: "simclr" or "simsiam".
        n_proj: The head's output width (official template: 128 for SimCLR, 2048 for SimSiam).
        image_size: Input side; below 100 px the CIFAR stem is used, as official.
        keep_fc: At 100 px and above, use the fc-1000 output as the feature (official).
    """

    def __init__(self, arch: str, head: str, n_proj: int, image_size: int, keep_fc: bool = True) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"DoGo head {head!r}: choose one of {HEADS}")
        small = image_size < 100
        self.encoder, width = build_encoder(arch, small_images=small, keep_fc=keep_fc and not small)
        self.kind = head
        self.head = SimCLRHead(width, n_proj) if head == "simclr" else SimSiamHead(width, n_proj)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` ``[N, 3, H, W]`` -> ``f`` ``[N, d]``, ``z`` ``[N, n]`` and, for SimSiam, ``p``; all L2-normalised."""
        f = self.encoder(x)
        if self.kind == "simclr":
            return {"f": F.normalize(f, dim=1), "z": F.normalize(self.head(f), dim=1)}
        z, p = self.head(f)
        return {"f": F.normalize(f, dim=1), "z": F.normalize(z, dim=1), "p": F.normalize(p, dim=1)}
