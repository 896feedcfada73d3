"""SEED's student: any backbone and the official MLP head, run once per resolution group."""

import torch
import torch.nn as nn

from mokd_fast.models.features import build_feature_backbone


class Student(nn.Module):
    """Backbone + ``Linear(d, h) -> ReLU -> Linear(h, D)`` (the official ``--student_mlp`` head: no BatchNorm).

    State-dict keys are ``backbone.*`` (what the evaluation and export tools read) and ``head.*``
    (``head.0/2.*``; with ``head_bn``, ``head.0/1/3.*``).
    ``forward`` takes the view groups of a step (the global view, then the small patches if any) and
    runs one backbone pass per group, as the official builders call the student once per input, so
    BatchNorm normalises each group with its own statistics; one call per step is what DDP wraps.

    Args:
        arch: Backbone: a torchvision ResNet alias, or any timm CNN or ViT.
        out_dim: D, the teacher's embedding width.
        hidden: h; default d (official).
        head_bn: BatchNorm1d(h) after the hidden Linear (``--head_bn``; official: none).
    """

    def __init__(self, arch: str, out_dim: int, hidden: int | None = None, head_bn: bool = False) -> None:
        super().__init__()
        built = build_feature_backbone(arch)
        self.backbone, self.kind, self.width = built.module, built.kind, built.width
        self._features = built.features
        hidden = hidden or built.width
        norm = [nn.BatchNorm1d(hidden)] if head_bn else []
        self.head = nn.Sequential(nn.Linear(built.width, hidden), *norm, nn.ReLU(inplace=True),
                                  nn.Linear(hidden, out_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W] -> [N, D]`` unnormalised embeddings."""
        return self.head(self._features(self.backbone, x))

    def forward(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per resolution group ``[N_g, 3, H_g, W_g]``, its ``[N_g, D]`` embeddings."""
        return [self.embed(x) for x in groups]
