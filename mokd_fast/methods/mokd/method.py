"""MOKD: two students, two EMA teachers, eight loss terms; the first method of the engine."""

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.amp import GradScaler

from mokd_fast.core.regions import region
from mokd_fast.methods.base import Losses, Method, OptimizerSpec, StepInfo
from mokd_fast.methods.common.backward import backward_totals
from mokd_fast.methods.common.ema import TeacherEMA
from mokd_fast.methods.common.monitors import distribution_monitors, embedding_spread
from mokd_fast.methods.mokd.branches import ModelPair, StudentOutputs, TeacherOutputs
from mokd_fast.methods.mokd.config import MOKDConfig
from mokd_fast.methods.mokd.losses import CENTERED_TERMS, MOKDCriterion
from mokd_fast.methods.mokd.official import export_official, load_official
from mokd_fast.methods.mokd.optim import (
    CNN_GROUP_SCHEDULES,
    VIT_GROUP_SCHEDULES,
    Schedules,
    build_optimizers,
)
from mokd_fast.methods.mokd.train_config import TrainConfig
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy

OPTIMIZER_NAMES = ("cnn", "vit")  # checkpoint entries optimizer_cnn/vit, fp16_scaler_cnn/vit; log loss_cnn/vit


class MOKD(Method):
    """Multi-Mode Online Knowledge Distillation between a CNN and a ViT.

    ``students`` holds both students in one module (DDP wraps it once; one backward pass serves
    both, since no gradient crosses between the models). ``teachers`` mirrors it, starts as a copy of
    the students, never receives gradients and follows them by EMA. Like the official code the
    teachers run in train mode, so the CNN teacher normalises with batch statistics.

    Args:
        cfg: Method settings; see ``MOKDConfig``.
        train: Training recipe (crops, optimisers, schedules); the official defaults when omitted.
    """

    name = "mokd"
    configs = (MOKDConfig, TrainConfig)
    official_cuda_precision = "fp16"  # main_mokd.py's --use_fp16 default
    parts_module = "mokd_fast.methods.mokd.parts"

    @classmethod
    def benchmark_settings(cls, bench: dict[str, Any]) -> dict[str, Any]:
        """The two architectures, head width, crop sizes and count, and the CNN's optimiser, with DINO's crop scales."""
        return {"arch_cnn": bench["arch_cnn"], "arch_vit": bench["arch_vit"], "out_dim": bench["out_dim"],
                "global_size": bench["global_size"], "local_size": bench["local_size"],
                "input_size": bench["global_size"], "local_crops_number": bench["local_crops_number"],
                "optimizer": bench["optimizer"], "global_crops_scale": (0.25, 1.0), "local_crops_scale": (0.05, 0.25)}

    def __init__(self, cfg: MOKDConfig, train: TrainConfig | None = None) -> None:
        super().__init__(cfg, train if train is not None else TrainConfig())
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

    @classmethod
    def make_policy(cls, cfg: MOKDConfig, train: TrainConfig) -> MultiCropPolicy:
        """DINO's multi-crop: two global views (blur 1.0; blur 0.1 + solarize 0.2), L local views."""
        return MultiCropPolicy.mokd(cfg.global_size, cfg.local_size, train.global_crops_scale, train.local_crops_scale,
                                    cfg.local_crops_number)

    def trainable(self) -> nn.Module:
        return self.students

    def convert_sync_batchnorm(self) -> nn.Module:
        """The CNN student and teacher in SyncBatchNorm, as official.

        The teacher then normalises with the global batch's statistics too. The official code wraps one
        DDP per student; here one wraps both (``trainable()``), with the same gradients.
        """
        for pair in (self.students, self.teachers):
            pair.cnn = nn.SyncBatchNorm.convert_sync_batchnorm(pair.cnn)
        self.ema = TeacherEMA(self.students, self.teachers, fused=self.cfg.fused_ema)
        return self.students

    def compile_regions(self) -> None:
        """Compiles each branch's student ``forward`` and teacher ``forward_teacher`` in place.

        Regional: the backbones and heads (all the FLOPs) compile, the losses and EMA stay eager (they
        are already fused). Shapes are static (``dynamic=False``): a student branch gets one graph per
        crop group (global, local), a teacher one, and nothing recompiles afterwards. Parameter names
        and state-dict keys do not change, so checkpoints are the same with or without compile.
        """
        for branch in (self.students.cnn, self.students.vit):
            branch.compile(dynamic=False)
        for branch in (self.teachers.cnn, self.teachers.vit):
            branch.forward_teacher = torch.compile(branch.forward_teacher, dynamic=False)

    def channels_last(self) -> None:
        """The CNN student's and teacher's weights in channels-last memory (the ViTs keep theirs)."""
        for pair in (self.students, self.teachers):
            pair.cnn.to(memory_format=torch.channels_last)

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        """The official CNN optimiser (with the T-head group on the ViT's schedules) and the ViT's AdamW."""
        t = self.train_cfg
        opt_cnn, opt_vit = build_optimizers(self.students, t.optimizer, fused=fused)
        return {
            "cnn": OptimizerSpec(opt_cnn, CNN_GROUP_SCHEDULES, dict(self.students.cnn.named_parameters()),
                                 t.clip_grad_cnn, t.freeze_last_layer),
            "vit": OptimizerSpec(opt_vit, VIT_GROUP_SCHEDULES, dict(self.students.vit.named_parameters()),
                                 t.clip_grad_vit, t.freeze_last_layer),
        }

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        return Schedules.build(self.train_cfg, self.cfg.epochs, iters_per_epoch, world_size,
                               self.cfg.momentum_teacher).arrays()

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
        students = self.run_trainable()(batch.global_crops, batch.local_crops)
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

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        students, teachers = self.forward_all(batch)
        with region("monitors"):
            monitors = self.monitors(teachers, info.epoch)
        with region("losses"):
            terms = self.criterion(students, teachers, info.epoch)
        return Losses({**terms, **monitors}, dict(zip(OPTIMIZER_NAMES, self.total_losses(terms))))

    @torch.no_grad()
    def monitors(self, teachers: TeacherOutputs, epoch: int) -> dict[str, torch.Tensor]:
        """Collapse monitors of each teacher's DINO distribution on the global crops (the self-distillation
        target: centred, at this epoch's teacher temperature, before this step's centre update) and the
        spread of its DINO outputs."""
        out = {}
        for name, logits in (("cnn", teachers.cnn_dino), ("vit", teachers.vit_dino)):
            i = CENTERED_TERMS.index(f"{name}_self")
            probs = torch.softmax((logits.float() - self.criterion.centers[i]) / self.criterion.temps[epoch, i], dim=-1)
            stats = distribution_monitors(probs) | {"spread": embedding_spread(logits)}
            out |= {f"teacher_{name}_{k}": v for k, v in stats.items()}
        return out

    def collapse_log_k(self) -> dict[str, float]:
        return {"teacher_cnn": math.log(self.cfg.out_dim), "teacher_vit": math.log(self.cfg.out_dim)}

    def collapse_advice(self) -> dict[str, str]:
        """What moves DINO teachers off each collapse, measured on the shapes data (docs/benchmarks.md,
        "MOKD's teachers at initialisation") or stated by the DINO paper (centering against one prototype)."""
        return {
            "spread": "Embeddings that point one way mostly mean a learning rate too high for the batch: lower "
                      "--lr_cnn or --lr_vit, whichever model's teacher is named.",
            "uniform": "On small data or short runs: --use_bn_in_head true (a head without BatchNorm maps random "
                       "CNN features to nearly parallel outputs, so the teacher starts near uniform), a smaller "
                       "--out_dim (1024-4096), a lower --teacher_temp (0.02-0.03), --momentum_teacher 0.99 for a "
                       "run of a few hundred steps, and --color_jitter strong enough that colour does not tell "
                       "the images apart.",
            "prototype": "One prototype for every image is what DINO's centering prevents: keep --center_momentum "
                         "at 0.9 or lower and sharpen less (a higher --teacher_temp, at most 0.07).",
        }

    def backward(
        self, terms: dict[str, torch.Tensor], scalers: tuple[GradScaler, GradScaler] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backpropagates both totals and returns them (unscaled), as the engine's step does.

        One pass over ``L_cnn + L_vit`` gives the gradients of the official two passes (the graphs
        share no parameter); ``single_backward=False`` runs the two passes. With fp16 each total is
        scaled by its own model's grad scaler first, as official.
        """
        totals = dict(zip(OPTIMIZER_NAMES, self.total_losses(terms)))
        backward_totals(totals, dict(zip(OPTIMIZER_NAMES, scalers)) if scalers else None, self.cfg.single_backward)
        return totals["cnn"], totals["vit"]

    def update_teachers(self, momentum: float) -> None:
        """EMA step of both teachers towards their students."""
        self.ema.update(momentum)

    def after_step(self, info: StepInfo) -> None:
        self.update_teachers(info.values["momentum"])

    def log_values(self, epoch: int) -> dict[str, float]:
        """The teacher temperatures of the two self-distillation terms this epoch."""
        temps = self.criterion.temps[epoch]
        return {"teacher_temp_cnn": temps[CENTERED_TERMS.index("cnn_self")].item(),
                "teacher_temp_vit": temps[CENTERED_TERMS.index("vit_self")].item()}

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        """The teachers' backbones, as the official evaluations read them."""
        return {"cnn": (self.teachers.cnn.backbone, "cnn"), "vit": (self.teachers.vit.backbone, "vit")}

    def describe(self) -> str:
        n_cnn = sum(p.numel() for p in self.students.cnn.parameters())
        n_vit = sum(p.numel() for p in self.students.vit.parameters())
        return f"MOKD {self.cfg.arch_cnn} ({n_cnn / 1e6:.1f}M) + {self.cfg.arch_vit} ({n_vit / 1e6:.1f}M)"

    def checkpoint_state(self) -> dict[str, Any]:
        """The official layout (models, architectures, centers), so the official tools read it."""
        return export_official(self)

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        return load_official(self, ckpt)

    def load_official_checkpoint(self, source: str | os.PathLike | dict) -> dict:
        """Loads a checkpoint written by the official ``main_mokd.py``; see ``official.load_official``."""
        return load_official(self, source)

    def official_state_dict(self, **extra: object) -> dict:
        """This model in the official checkpoint layout; see ``checkpoint.export_official``."""
        return export_official(self, **extra)
