"""Position-embedding resampling with the exact arithmetic of DINO and the official MOKD code."""

import math

import torch
import torch.nn.functional as F


def resample_grid_pos_embed(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resamples a square grid of position embeddings to ``height x width``.

    The official code (inherited from DINO) calls bicubic ``F.interpolate`` with
    ``scale_factor=(n + 0.1) / side`` and no antialiasing. With a scale factor PyTorch maps output
    pixels back to input coordinates through that factor rather than ``side / n``, so the values
    differ from a ``size=``-based resize (and from timm's antialiased resampler). Teachers trained by
    the official code only see embeddings made this way, so we reproduce it exactly.

    Args:
        pos_embed: ``[1, side * side, C]`` embeddings of a square grid (no prefix tokens).
        height: Output grid rows.
        width: Output grid columns.

    Returns:
        ``[1, height * width, C]`` in the input's dtype; the input itself when the grid already fits.
        Half-precision inputs are resampled in float32 (CPU bicubic has no half kernel, and the official
        code never sees half-precision parameters); float32 and float64 inputs are resampled in their own
        precision, as the official code does, so float64 parity holds over many steps.
    """
    n_pos, dim = pos_embed.shape[1], pos_embed.shape[2]
    side = math.isqrt(n_pos)
    if side * side != n_pos:
        raise ValueError(f"position embedding has {n_pos} entries, which is not a square grid")
    if height == side and width == side:
        return pos_embed
    grid = pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, C, side, side]
    half = grid.dtype in (torch.float16, torch.bfloat16)
    grid = F.interpolate(
        grid.float() if half else grid,
        scale_factor=((height + 0.1) / side, (width + 0.1) / side),
        mode="bicubic",
    )
    return grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, height * width, dim)
