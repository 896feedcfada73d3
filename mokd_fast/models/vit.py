"""ViT backbones for MOKD's ViT branch: official aliases plus timm VisionTransformer models.

Every crop size the patch size divides works: the position embeddings are resampled per forward
with the official (DINO) arithmetic, see ``pos_embed.resample_grid_pos_embed``.
"""

from functools import partial

import timm
import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mokd_fast.models.cnn import unknown_name_error
from mokd_fast.models.pos_embed import resample_grid_pos_embed

# Official aliases: name -> (width, heads). All are 12 blocks deep, MLP ratio 4, qkv bias, LN eps 1e-6.
VIT_ALIASES: dict[str, tuple[int, int]] = {
    "vit_tiny": (192, 3),
    "vit_small": (384, 6),
    "vit_base": (768, 12),
}


def build_vit(name: str, patch_size: int, drop_path_rate: float) -> VisionTransformer:
    """Builds a randomly initialised ViT by official alias or timm name.

    Args:
        name: ``vit_tiny``/``vit_small``/``vit_base`` (patch size from ``patch_size``, a 224 grid of
            position embeddings as in the official code) or a timm VisionTransformer name (its own
            patch size).
        patch_size: Patch size for the aliases.
        drop_path_rate: Stochastic depth; the students use it, the teachers are built with 0.

    Raises:
        ValueError: Unknown name, or a timm model this branch cannot drive.
    """
    if name in VIT_ALIASES:
        width, heads = VIT_ALIASES[name]
        vit = VisionTransformer(
            img_size=224,
            patch_size=patch_size,
            embed_dim=width,
            depth=12,
            num_heads=heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            num_classes=0,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            dynamic_img_size=True,
        )
        # The official ViT draws the CLS token like the position embedding (timm uses std 1e-6).
        trunc_normal_(vit.cls_token, std=0.02)
        return vit
    if not timm.is_model(name):
        raise unknown_name_error("ViT (--arch_vit)", name, list(VIT_ALIASES), timm.list_models("*vit*"))
    not_a_vit = ValueError(
        f"--arch_vit {name!r} is not a timm VisionTransformer with a class token and absolute "
        "position embeddings (e.g. vit_small_patch16_224, deit_small_patch16_224)."
    )
    try:
        vit = timm.create_model(
            name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate, dynamic_img_size=True
        )
    except TypeError as err:  # models without the dynamic_img_size argument are not ViTs we can drive
        raise not_a_vit from err
    if not isinstance(vit, VisionTransformer) or vit.cls_token is None or vit.pos_embed is None:
        raise not_a_vit
    return vit


def vit_patch_size(vit: VisionTransformer) -> int:
    """The ViT's (square) patch size in pixels."""
    return vit.patch_embed.patch_size[0]


def _embedded_tokens(vit: VisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding, prefix tokens and resampled position embeddings: the blocks' input.

    Returns:
        ``tokens [B, n_prefix + h * w, C]`` and the patch grid ``(h, w)``.
    """
    tokens = vit.patch_embed(x)  # [B, h, w, C]: dynamic_img_size makes timm emit NHWC
    batch, h, w, dim = tokens.shape
    tokens = tokens.reshape(batch, h * w, dim)
    n_prefix = vit.num_prefix_tokens
    prefix = [vit.cls_token.expand(batch, -1, -1)]
    if vit.reg_token is not None:
        prefix.append(vit.reg_token.expand(batch, -1, -1))
    pos = vit.pos_embed
    patch_pos = resample_grid_pos_embed(pos if vit.no_embed_class else pos[:, n_prefix:], h, w)
    if vit.no_embed_class:
        tokens = torch.cat(prefix + [tokens + patch_pos], dim=1)
    else:
        tokens = torch.cat(prefix + [tokens], dim=1) + torch.cat([pos[:, :n_prefix], patch_pos], dim=1)
    return vit.norm_pre(vit.patch_drop(vit.pos_drop(tokens))), (h, w)


def vit_tokens(vit: VisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Runs the ViT and splits its normalised output tokens.

    Args:
        vit: A model from ``build_vit``.
        x: ``[B, 3, H, W]`` images; the patch size divides H and W.

    Returns:
        ``cls [B, C]``, ``patches [B, h * w, C]`` (prefix tokens such as registers dropped) and the
        patch grid ``(h, w)``.
    """
    tokens, grid_hw = _embedded_tokens(vit, x)
    tokens = vit.norm(vit.blocks(tokens))  # [B, n_prefix + h * w, C]
    return tokens[:, 0], tokens[:, vit.num_prefix_tokens:], grid_hw


def vit_last_blocks(vit: VisionTransformer, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The outputs of the last ``n`` blocks, each through the final norm, as the linear probe reads them.

    This is DINO's ``get_intermediate_layers``: the official linear evaluation concatenates the CLS
    token of each.

    Returns:
        ``n`` tensors ``[B, n_prefix + h * w, C]``, the last block's last.
    """
    tokens, _ = _embedded_tokens(vit, x)
    first_kept = len(vit.blocks) - n
    outputs = []
    for i, block in enumerate(vit.blocks):
        tokens = block(tokens)
        if i >= first_kept:
            outputs.append(vit.norm(tokens))
    return outputs
