"""The two MOKD branches (backbone + DINO head + T-head) and the student/teacher pairs.

A branch's state-dict keys (``backbone.*``, ``head.*``, ``transhead.*``) equal the official wrapper's,
so official checkpoints map onto it one to one.
"""

from typing import NamedTuple

import torch
import torch.nn as nn

from mokd_fast.core.regions import region
from mokd_fast.methods.mokd.config import MOKDConfig
from mokd_fast.methods.mokd.heads import DINOHead, THead
from mokd_fast.models.cnn import build_cnn
from mokd_fast.models.vit import build_vit, vit_patch_size, vit_tokens

VIT_THEAD_GRID = 14  # official: the ViT T-head's position grid is 14x14 whatever the patch size


class Encoded(NamedTuple):
    """What a branch's backbone gives its heads for one batch of crops.

    Attributes:
        pooled: ``[N, C]`` global feature for the DINO head (CNN: pooled map; ViT: CLS token).
        tokens: ``[N, h*w, D]`` grid tokens for the T-head (CNN: 1x1-projected map; ViT: patches).
        grid_hw: ``(h, w)``.
        query: ``[N, D]`` this branch's query token for the other teacher's feature search
            (CNN: pooled projection; ViT: CLS token).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    grid_hw: tuple[int, int]
    query: torch.Tensor


class Branch(nn.Module):
    """Backbone, DINO head and T-head of one model; ``encode`` is the backbone-specific part."""

    backbone: nn.Module
    head: DINOHead
    transhead: THead

    def encode(self, x: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student pass over one resolution group ``[N, 3, H, W]``.

        Returns:
            DINO-head scores ``[N, K]``, T-head scores ``[N, K]``, query tokens ``[N, D]``.
        """
        with region("backbone"):
            enc = self.encode(x)
        with region("dino_head"):
            dino = self.head(enc.pooled)
        with region("thead"):
            thead = self.transhead(enc.tokens, enc.grid_hw)
        return dino, thead, enc.query

    def forward_teacher(
        self, global_crops: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher pass over the global crops plus the feature search.

        Args:
            global_crops: ``[2B, 3, H, W]``, view-major.
            queries: ``[L*B, D]`` the other student's local query tokens, view-major.

        Returns:
            DINO-head scores ``[2B, K]``, T-head scores ``[2B, K]`` and search scores ``[L*B, K]``:
            the T-head over the FIRST global view's grid, tiled once per local view, each copy led
            by the matching query token.
        """
        with region("backbone"):
            enc = self.encode(global_crops)
        batch = global_crops.shape[0] // 2
        n_local = queries.shape[0] // batch
        with region("search"):
            first_view = enc.tokens[:batch].repeat(n_local, 1, 1)  # [L*B, h*w, D]
            search = self.transhead(first_view, enc.grid_hw, queries)
        with region("dino_head"):
            dino = self.head(enc.pooled)
        with region("thead"):
            thead = self.transhead(enc.tokens, enc.grid_hw)
        return dino, thead, search


class CNNBranch(Branch):
    """CNN branch: the T-head projects the last feature map to the ViT width with a 1x1 conv."""

    def __init__(self, cfg: MOKDConfig, vit_width: int, freeze_gain: bool) -> None:
        super().__init__()
        cnn = build_cnn(cfg.arch_cnn)
        self.backbone = cnn.module
        self._feature_map = cnn.feature_map
        self.head = DINOHead(cnn.num_features, cfg.out_dim, cfg.use_bn_in_head, freeze_gain)
        self.transhead = THead(
            cfg.out_dim, max(1, cfg.input_size // cnn.reduction), vit_width, in_chans=cnn.num_features
        )

    def encode(self, x: torch.Tensor) -> Encoded:
        fmap = self._feature_map(self.backbone, x)  # [N, C, h, w]
        tokens, projected_pool, grid_hw = self.transhead.project(fmap)
        return Encoded(fmap.mean(dim=(2, 3)), tokens, grid_hw, projected_pool)


class ViTBranch(Branch):
    """ViT branch: the T-head reads the backbone's patch tokens directly."""

    def __init__(self, cfg: MOKDConfig, drop_path_rate: float, freeze_gain: bool) -> None:
        super().__init__()
        self.backbone = build_vit(cfg.arch_vit, cfg.patch_size, drop_path_rate)
        width = self.backbone.embed_dim
        self.head = DINOHead(width, cfg.out_dim, cfg.use_bn_in_head, freeze_gain)
        self.transhead = THead(cfg.out_dim, VIT_THEAD_GRID, width)

    @property
    def patch_size(self) -> int:
        """The backbone's patch size in pixels."""
        return vit_patch_size(self.backbone)

    def encode(self, x: torch.Tensor) -> Encoded:
        cls, patches, grid_hw = vit_tokens(self.backbone, x)
        return Encoded(cls, patches, grid_hw, cls)


class StudentOutputs(NamedTuple):
    """Student outputs of one step; the first two views of each ``[(2+L)*B, ...]`` are global.

    Attributes:
        cnn_dino: ``[(2+L)*B, K]`` CNN DINO-head scores, globals then locals, view-major.
        cnn_thead: ``[(2+L)*B, K]`` CNN T-head scores.
        cnn_query: ``[L*B, D]`` CNN pooled projections of the local crops.
        vit_dino: ``[(2+L)*B, K]``.
        vit_thead: ``[(2+L)*B, K]``.
        vit_query: ``[L*B, D]`` ViT CLS tokens of the local crops.
    """

    cnn_dino: torch.Tensor
    cnn_thead: torch.Tensor
    cnn_query: torch.Tensor
    vit_dino: torch.Tensor
    vit_thead: torch.Tensor
    vit_query: torch.Tensor


class TeacherOutputs(NamedTuple):
    """Teacher outputs of one step.

    Attributes:
        cnn_dino: ``[2B, K]``.
        cnn_thead: ``[2B, K]``.
        cnn_search: ``[L*B, K]`` CNN T-head over view 1, queried by the ViT student's local CLS.
        vit_dino: ``[2B, K]``.
        vit_thead: ``[2B, K]``.
        vit_search: ``[L*B, K]`` ViT T-head over view 1, queried by the CNN student's projections.
    """

    cnn_dino: torch.Tensor
    cnn_thead: torch.Tensor
    cnn_search: torch.Tensor
    vit_dino: torch.Tensor
    vit_thead: torch.Tensor
    vit_search: torch.Tensor


class ModelPair(nn.Module):
    """A CNN branch and a ViT branch: one module, so DDP wraps both students at once."""

    def __init__(self, cfg: MOKDConfig, student: bool) -> None:
        super().__init__()
        self.vit = ViTBranch(
            cfg, cfg.drop_path_rate if student else 0.0, cfg.freeze_gain_vit if student else True
        )
        self.cnn = CNNBranch(cfg, self.vit.backbone.embed_dim, cfg.freeze_gain_cnn if student else True)

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor) -> StudentOutputs:
        """Student pass: one forward per resolution group and model, as official.

        Globals and locals go through separately so BatchNorm statistics are per group.
        """
        with region("cnn_student"):
            cnn_g, cnn_t_g, _ = self.cnn(global_crops)
            cnn_l, cnn_t_l, cnn_query = self.cnn(local_crops)
        with region("vit_student"):
            vit_g, vit_t_g, _ = self.vit(global_crops)
            vit_l, vit_t_l, vit_query = self.vit(local_crops)
        return StudentOutputs(
            torch.cat([cnn_g, cnn_l]),
            torch.cat([cnn_t_g, cnn_t_l]),
            cnn_query,
            torch.cat([vit_g, vit_l]),
            torch.cat([vit_t_g, vit_t_l]),
            vit_query,
        )

    def forward_teacher(self, global_crops: torch.Tensor, students: StudentOutputs) -> TeacherOutputs:
        """Teacher pass; each teacher's search is queried by the OTHER student's local tokens."""
        with region("cnn_teacher"):
            cnn_dino, cnn_thead, cnn_search = self.cnn.forward_teacher(global_crops, students.vit_query.detach())
        with region("vit_teacher"):
            vit_dino, vit_thead, vit_search = self.vit.forward_teacher(global_crops, students.cnn_query.detach())
        return TeacherOutputs(cnn_dino, cnn_thead, cnn_search, vit_dino, vit_thead, vit_search)
