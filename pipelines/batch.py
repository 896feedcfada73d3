"""The batch contract between every data pipeline and the training step."""

from dataclasses import dataclass

import torch


@dataclass
class MultiCropBatch:
    """One step's crops, grouped by resolution so the model runs one pass per group.

    Attributes:
        global_crops: ``[n_global * B, 3, Hg, Wg]`` normalised floats, view-major (all B samples of
            view 0, then view 1, ...): the order of ``torch.cat(crops[:n_global])`` in the official code.
        local_crops: ``[L * B, 3, Hl, Wl]``, view-major; None when the policy has no local views.
        labels: Optional ``[B]`` class indices, for evaluation and supervised methods.
        n_global: Number of global views (2 for MOKD).
        indices: Optional ``[B]`` sample indices in the source listing (the converter's manifest index;
            the ImageFolder index for the torchvision pipeline), for methods with per-sample memory.
            The DALI pipeline leaves it None (its webdataset reader does not expose the sample key).
    """

    global_crops: torch.Tensor
    local_crops: torch.Tensor | None
    labels: torch.Tensor | None = None
    n_global: int = 2
    indices: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Images per step (B)."""
        return self.global_crops.shape[0] // self.n_global

    @classmethod
    def from_views(cls, views: list[torch.Tensor], labels: torch.Tensor | None = None,
                   n_global: int = 2) -> "MultiCropBatch":
        """Groups per-view tensors ``[B, 3, H, W]`` (the globals, then locals) as the official loader yields them."""
        if len(views) < n_global:
            raise ValueError(f"need {n_global} global views, got {len(views)} views")
        local = torch.cat(views[n_global:]) if len(views) > n_global else None
        return cls(torch.cat(views[:n_global]), local, labels, n_global)
