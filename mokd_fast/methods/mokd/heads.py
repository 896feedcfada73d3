"""Projection heads: the DINO head and the transformer head (T-head) of MOKD.

Key names equal the official ones (``mlp.*``, ``last_layer.weight_g``/``weight_v``, ``patch_embed``,
``pos_embed``, ``blocks.*``, ``norm``), so official checkpoints load without renaming.
"""

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from mokd_fast.models.pos_embed import resample_grid_pos_embed

_layer_norm = partial(nn.LayerNorm, eps=1e-6)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation ``W = g * V / ||V||`` (row norms).

    Stored as ``weight_g [out, 1]`` and ``weight_v [out, in]``: the names the official checkpoints
    use (``nn.utils.weight_norm``), without that deprecated hook machinery.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        # The official layer keeps nn.Linear's default init for V (its trunc-normal pass never reaches
        # V) and sets the gain to 1.
        self.weight_v = nn.Parameter(nn.Linear(in_features, out_features, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))
        return F.linear(x, weight)


def _init_linear_and_norm(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class DINOHead(nn.Module):
    """MLP (Linear-GELU x3 to a bottleneck), L2 normalisation, weight-normed prototypes.

    Args:
        in_dim: Backbone feature width.
        out_dim: Number of prototypes.
        use_bn: BatchNorm after each hidden Linear.
        freeze_gain: Keep the prototype gain fixed at 1 (the official ``norm_last_layer``).
        hidden_dim: Hidden MLP width.
        bottleneck_dim: Width of the normalised embedding.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_bn: bool = False,
        freeze_gain: bool = True,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate((hidden_dim, hidden_dim)):
            layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, width))
            if use_bn:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear_and_norm)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.requires_grad_(not freeze_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim] -> [N, out_dim]`` prototype scores."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class THead(nn.Module):
    """Transformer head: blocks over a feature grid, mean-pooled, weight-normed prototypes.

    The CNN variant (``in_chans`` given) first projects the feature map to the ViT width with a 1x1
    convolution; its average-pooled projection is the CNN's query token for the ViT teacher's
    feature search. A query token, when given, is prepended to the grid and dropped before pooling,
    so it steers attention without being averaged in.

    Args:
        out_dim: Number of prototypes.
        grid: Side of the learned position-embedding grid (7 for a ResNet at 224, 14 for a ViT);
            other grid sizes resample it bicubically.
        embed_dim: Token width (the ViT's width for both T-heads).
        in_chans: Feature-map channels for the CNN variant; ``None`` for the ViT variant.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        mlp_ratio: Block MLP expansion.
    """

    def __init__(
        self,
        out_dim: int,
        grid: int,
        embed_dim: int,
        in_chans: int | None = None,
        depth: int = 3,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"T-head width {embed_dim} (the ViT's width) is not divisible by {num_heads} heads; "
                "choose a ViT whose embedding width is a multiple of 6"
            )
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=1) if in_chans is not None else None
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dim))
        self.blocks = nn.Sequential(
            *(
                Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=_layer_norm)
                for _ in range(depth)
            )
        )
        self.norm = _layer_norm(embed_dim)
        trunc_normal_(self.pos_embed, std=0.02)
        self.blocks.apply(_init_linear_and_norm)
        self.last_layer = WeightNormLinear(embed_dim, out_dim)

    def project(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """CNN variant: ``[B, C, h, w]`` map -> tokens ``[B, h*w, D]``, pooled ``[B, D]``, ``(h, w)``."""
        projected = self.patch_embed(feature_map)  # [B, D, h, w]
        h, w = projected.shape[-2:]
        pooled = projected.mean(dim=(2, 3))
        return projected.flatten(2).transpose(1, 2), pooled, (h, w)

    def forward(
        self, tokens: torch.Tensor, grid_hw: tuple[int, int], query: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores a token grid.

        Args:
            tokens: ``[B, h*w, D]`` grid tokens in row-major order.
            grid_hw: ``(h, w)``.
            query: Optional ``[B, D]`` query token.

        Returns:
            ``[B, out_dim]`` prototype scores.
        """
        x = tokens + resample_grid_pos_embed(self.pos_embed, *grid_hw)
        if query is not None:
            x = torch.cat([query.unsqueeze(1), x], dim=1)  # [B, 1 + h*w, D]
        x = self.norm(self.blocks(x))
        if query is not None:
            x = x[:, 1:]
        return self.last_layer(x.mean(dim=1))

