"""The batch contract between every data pipeline and the training step."""

from dataclasses import dataclass

import torch


@dataclass
class MultiCropBatch:
    """One step's crops, grouped by resolution so the model runs one pass per group.

    Attributes:
        global_crops: ``[2 * B, 3, Hg, Wg]`` normalised floats, view-major (all B samples of view 0,
            then view 1): the order of ``torch.cat(crops[:2])`` in the official code.
        local_crops: ``[L * B, 3, Hl, Wl]``, view-major.
        labels: Optional ``[B]`` class indices, for evaluation only.
    """

    global_crops: torch.Tensor
    local_crops: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Images per step (B)."""
        return self.global_crops.shape[0] // 2

    @classmethod
    def from_views(cls, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> "MultiCropBatch":
        """Groups per-view tensors ``[B, 3, H, W]`` (2 global, then locals) as the official loader yields them."""
        if len(views) < 3:
            raise ValueError(f"need 2 global views and at least 1 local view, got {len(views)} views")
        return cls(torch.cat(views[:2]), torch.cat(views[2:]), labels)
