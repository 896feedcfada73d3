"""The frozen features each evaluation reads, with the official choices of token and block."""

import torch
from torch import nn

from mokd_fast.eval.cli import AVGPOOL_CHOICES
from mokd_fast.models.features import cnn_pooled
from mokd_fast.models.vit import vit_last_blocks
from mokd_fast.models.weights import LoadedBackbone


class FeatureNet(nn.Module):
    """Frozen backbone -> ``[B, D]`` features for one evaluation.

    k-NN (``n_last_blocks=1``, as the official ``eval_knn.py``): CNN pooled feature; ViT CLS token
    (``avgpool_patchtokens=0``), mean patch token (1) or their sum (2), all after the final norm.
    Linear probe (``n_last_blocks=n``, as the official ``eval_linear.py``): the ViT's CLS tokens of the
    last ``n`` blocks (each through the final norm) concatenated, plus the last block's mean patch token
    when ``avgpool_patchtokens`` is set. The official code interleaves CLS and mean coordinates when it
    appends the mean; a fixed permutation of the inputs of a linear layer changes nothing it can learn.
    """

    def __init__(self, backbone: LoadedBackbone, n_last_blocks: int = 1, avgpool_patchtokens: int = 0,
                 knn: bool = True) -> None:
        super().__init__()
        if avgpool_patchtokens not in AVGPOOL_CHOICES:
            raise ValueError(f"--avgpool_patchtokens {avgpool_patchtokens}: choose from {AVGPOOL_CHOICES}")
        if backbone.kind == "vit" and not 1 <= n_last_blocks <= len(backbone.module.blocks):
            raise ValueError(f"--n_last_blocks {n_last_blocks}: {backbone.arch} has {len(backbone.module.blocks)} blocks")
        self.backbone = backbone.module
        self.kind = backbone.kind
        self.n_last_blocks = n_last_blocks
        self.avgpool = avgpool_patchtokens
        self.knn = knn

    def train(self, mode: bool = True) -> "FeatureNet":
        """The backbone stays in eval mode: BatchNorm uses its running statistics, as official."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, H, W]`` normalised images -> ``[B, D]`` features (not L2-normalised)."""
        if self.kind == "cnn":
            return cnn_pooled(self.backbone, x)
        n_prefix = self.backbone.num_prefix_tokens
        if self.knn:
            tokens = vit_last_blocks(self.backbone, x, 1)[0]  # [B, n_prefix + h*w, C]
            cls, mean = tokens[:, 0], tokens[:, n_prefix:].mean(dim=1)
            return (cls, mean, cls + mean)[self.avgpool]
        blocks = vit_last_blocks(self.backbone, x, self.n_last_blocks)
        parts = [t[:, 0] for t in blocks]
        if self.avgpool:
            parts.append(blocks[-1][:, n_prefix:].mean(dim=1))
        return torch.cat(parts, dim=-1)
