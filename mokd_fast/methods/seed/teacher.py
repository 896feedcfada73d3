"""SEED's frozen teacher: a loaded backbone and optional projection head, always in eval mode, never trained."""

import hashlib
from collections.abc import Callable

import torch
import torch.nn as nn


class FrozenTeacher(nn.Module):
    """``[N, 3, H, W] -> [N, D]`` teacher embeddings, under ``torch.no_grad``, BatchNorm on running statistics.

    The backbone runs under whatever autocast the step uses (bf16 on CUDA: it is most of the
    teacher's FLOPs); the head runs in fp32 with autocast off, so the embeddings whose cosines
    the 1e-4 temperature magnifies come out of an fp32 matmul (the backbone feature is cast up).
    ``train()`` leaves it in eval mode whatever it is asked, as the official code re-asserts every
    epoch, and its parameters never require gradients.

    Args:
        backbone: The teacher's network.
        features: ``features(backbone, x) -> [N, d]``.
        head: ``[N, d] -> [N, D]`` projection, or None (the embedding is the feature).
        dim: D.
        source: One line saying what was loaded from where, for the run's first line.
    """

    def __init__(self, backbone: nn.Module, features: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 head: nn.Module | None, dim: int, source: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self._features = features
        self.dim, self.source = dim, source
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Stays in eval mode: the teacher's BatchNorms use their running statistics throughout."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self._features(self.backbone, x)  # [N, d], autocast dtype
        with torch.autocast(x.device.type, enabled=False):
            return self.head(f.float() if f.dtype in (torch.float16, torch.bfloat16) else f)  # [N, D], fp32 at least

    def digest(self) -> str:
        """SHA-256 of every weight and buffer: a resumed run checks it has the same teacher."""
        sha = hashlib.sha256()
        for name, value in sorted(self.state_dict().items()):
            sha.update(name.encode())
            sha.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return sha.hexdigest()
