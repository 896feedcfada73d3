"""MOKD: two students, two EMA teachers, eight loss terms."""

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.amp import GradScaler

from mokd_fast.checkpoint import export_official, load_official
from mokd_fast.config import MOKDConfig
from mokd_fast.ema import TeacherEMA
from mokd_fast.losses import MOKDCriterion
from mokd_fast.models.branches import ModelPair, StudentOutputs, TeacherOutputs
from mokd_fast.regions import region
from pipelines.batch import MultiCropBatch


class MOKD(nn.Module):
    """Multi-Mode Online Knowledge Distillation between a CNN and a ViT.

    ``students`` holds both students in one module (DDP wraps it once; one backward pass serves
    both, since no gradient crosses between the models). ``teachers`` mirrors it, starts as a copy of
    the students, never receives gradients and follows them by EMA. Like the official code the
    teachers run in train mode, so the CNN teacher normalises with batch statistics.

    Args:
        cfg: Method settings; see ``MOKDConfig``.
    """

    def __init__(self, cfg: MOKDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.students = ModelPair(cfg, student=True)
        patch = self.students.vit.patch_size
        for flag in ("global_size", "local_size"):
            size = getattr(cfg, flag)
            if size % patch:
                raise ValueError(
                    f"{flag}={size} is not divisible by the ViT patch size {patch} ({cfg.arch_vit}); "
                    f"use a multiple of {patch}, e.g. {max(patch, size // patch * patch)}"
                )
        self.teachers = ModelPair(cfg, student=False)
        self.teachers.load_state_dict(self.students.state_dict())
        self.teachers.requires_grad_(False)
        self.criterion = MOKDCriterion(cfg)
        self.ema = TeacherEMA(self.students, self.teachers, fused=cfg.fused_ema)
        self._set_student_runner(self.students)

    def _set_student_runner(self, runner: nn.Module) -> None:
        # A plain attribute, not a submodule: a DDP wrapper shares the students' parameters and must
        # not add "module." keys (or a second copy) to state_dict().
        self.__dict__["_run_students"] = runner

    def distribute(self, device: torch.device, sync_bn: bool = True, static_graph: bool = True,
                   bucket_view: bool = True) -> None:
        """Prepares the model for multi-process training (call once the process group is up).

        The students are wrapped in one DDP (one gradient reduction for both models; state-dict keys
        unchanged). With ``sync_bn`` on CUDA the CNN student and teacher use SyncBatchNorm, as official:
        the teacher then normalises with the global batch's statistics too. SyncBatchNorm has no CPU
        kernel, so on CPU (gloo) each rank keeps its own batch statistics. ``static_graph`` is valid
        because every step gives every student parameter a gradient; ``bucket_view`` lets gradients
        live in the all-reduce buckets.

        Raises:
            ValueError: ``single_backward`` is off: one DDP reduces once per step, so the official two
                backward passes (one DDP per student there) cannot run under it. Their gradients equal
                the single pass's (tested), so nothing is lost by keeping it on.
        """
        if not self.cfg.single_backward:
            raise ValueError("single_backward=False (two backward passes) cannot run under DDP, which wraps both "
                             "students once; keep --single_backward True (same gradients, tested)")
        if sync_bn and device.type == "cuda":
            for pair in (self.students, self.teachers):
                pair.cnn = nn.SyncBatchNorm.convert_sync_batchnorm(pair.cnn)
            self.ema = TeacherEMA(self.students, self.teachers, fused=self.cfg.fused_ema)
        ddp = nn.parallel.DistributedDataParallel(
            self.students, device_ids=[device.index] if device.type == "cuda" else None,
            static_graph=static_graph, gradient_as_bucket_view=bucket_view,
        )
        self._set_student_runner(ddp)

    def _groups(self, crops: Sequence[torch.Tensor] | MultiCropBatch) -> MultiCropBatch:
        if not isinstance(crops, MultiCropBatch) and len(crops) < 3:
            raise ValueError(f"need 2 global views and at least 1 local view, got {len(crops)} views")
        batch = crops if isinstance(crops, MultiCropBatch) else MultiCropBatch.from_views(list(crops))
        if batch.n_global != 2 or batch.local_crops is None:
            raise ValueError(f"MOKD needs 2 global views and at least 1 local view; the batch has {batch.n_global} "
                             f"global views and {'no' if batch.local_crops is None else 'some'} local views")
        cfg = self.cfg
        expected = {
            "global_crops": (2 * batch.batch_size, 3, cfg.global_size, cfg.global_size),
            "local_crops": (cfg.local_crops_number * batch.batch_size, 3, cfg.local_size, cfg.local_size),
        }
        for name, shape in expected.items():
            got = tuple(getattr(batch, name).shape)
            if got != shape:
                raise ValueError(
                    f"{name} has shape {got}, expected {shape} from global_size={cfg.global_size}, "
                    f"local_size={cfg.local_size}, local_crops_number={cfg.local_crops_number}"
                )
        return batch

    def forward_all(
        self, crops: Sequence[torch.Tensor] | MultiCropBatch
    ) -> tuple[StudentOutputs, TeacherOutputs]:
        """Student and teacher scores for one step, without losses."""
        batch = self._groups(crops)
        students = self._run_students(batch.global_crops, batch.local_crops)
        with torch.no_grad():
            teachers = self.teachers.forward_teacher(batch.global_crops, students)
        return students, teachers

    def loss_terms(self, crops: Sequence[torch.Tensor] | MultiCropBatch, epoch: int) -> dict[str, torch.Tensor]:
        """The eight named terms of one step; advances the centers as the official step does.

        Args:
            crops: 2 global then L local ``[B, 3, H, W]`` tensors, or a ``MultiCropBatch``.
            epoch: Current epoch (selects the teacher temperatures).

        Returns:
            ``cnn_self, cnn_thead, cnn_cross, cnn_search, vit_self, vit_thead, vit_cross, vit_search``.
        """
        students, teachers = self.forward_all(crops)
        with region("losses"):
            return self.criterion(students, teachers, epoch)

    def total_losses(self, terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_cnn = self + thead + lamda_c (cross + search)``; ``L_vit`` likewise with ``lamda_t``."""
        lam_c, lam_t = self.cfg.lamda_c, self.cfg.lamda_t
        cnn = terms["cnn_self"] + terms["cnn_thead"] + lam_c * (terms["cnn_cross"] + terms["cnn_search"])
        vit = terms["vit_self"] + terms["vit_thead"] + lam_t * (terms["vit_cross"] + terms["vit_search"])
        return cnn, vit

    def backward(
        self, terms: dict[str, torch.Tensor], scalers: tuple[GradScaler, GradScaler] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backpropagates both totals and returns them (unscaled).

        The two graphs share no parameter (everything one model learns from the other is detached),
        so one pass over ``L_cnn + L_vit`` gives the gradients of the official two passes;
        ``single_backward=False`` runs the two passes. With fp16 each total is scaled by its own
        model's grad scaler first, as official; the sum still backpropagates each scale to its model only.
        """
        cnn, vit = self.total_losses(terms)
        scaled_cnn, scaled_vit = (scalers[0].scale(cnn), scalers[1].scale(vit)) if scalers else (cnn, vit)
        if self.cfg.single_backward:
            (scaled_cnn + scaled_vit).backward()
        else:
            scaled_cnn.backward()
            scaled_vit.backward()
        return cnn, vit

    def update_teachers(self, momentum: float) -> None:
        """EMA step of both teachers towards their students."""
        self.ema.update(momentum)

    def load_official_checkpoint(self, source: str | os.PathLike | dict) -> dict:
        """Loads a checkpoint written by the official ``main_mokd.py``; see ``checkpoint.load_official``."""
        return load_official(self, source)

    def official_state_dict(self, **extra: object) -> dict:
        """This model in the official checkpoint layout; see ``checkpoint.export_official``."""
        return export_official(self, **extra)
