"""The training step and everything it owns: model, optimisers, scalers, schedules and speed switches.

Kept apart from the run loop (``engine.Trainer``) so ``tools/benchmark.py --mode step`` times exactly
the step ``train.py`` runs, with any switch turned off.
"""

from dataclasses import dataclass, replace

import torch
from torch.amp import GradScaler

from mokd_fast.config import MOKDConfig
from mokd_fast.distributed import DistContext
from mokd_fast.mokd import MOKD
from mokd_fast.optim import (
    Schedules,
    build_optimizers,
    clip_per_parameter,
    drop_last_layer_grads,
)
from mokd_fast.regions import region
from mokd_fast.train_config import TrainConfig
from pipelines.batch import MultiCropBatch

AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class StepSwitches:
    """The step's speed switches as resolved for the device (``auto`` settled).

    Attributes:
        precision: "fp32", "fp16" (a GradScaler per model) or "bf16".
        compile: ``torch.compile`` each branch's student forward and teacher forward.
        channels_last: CNN weights and every input crop in channels-last memory.
        fused_optim: Fused AdamW (foreach SGD on CPU, fused on CUDA); off: per-parameter loops.
        ddp_static_graph: DDP ``static_graph`` (the same parameters get gradients every step).
        ddp_bucket_view: DDP ``gradient_as_bucket_view`` (gradients live in the all-reduce buckets).
    """

    precision: str
    compile: bool
    channels_last: bool
    fused_optim: bool
    ddp_static_graph: bool
    ddp_bucket_view: bool

    @classmethod
    def resolve(cls, cfg: TrainConfig, device: torch.device) -> "StepSwitches":
        """``auto`` values for ``device``: bf16, compile and channels-last on CUDA; fp32 and eager on CPU."""
        cuda = device.type == "cuda"
        precision = cfg.resolved_precision
        return cls(
            precision=("bf16" if cuda else "fp32") if precision == "auto" else precision,
            compile=cuda if cfg.compile is None else cfg.compile,
            channels_last=cuda if cfg.channels_last is None else cfg.channels_last,
            fused_optim=cfg.fused_optim,
            ddp_static_graph=cfg.ddp_static_graph,
            ddp_bucket_view=cfg.ddp_bucket_view,
        )


def compile_branches(model: MOKD) -> None:
    """Compiles each branch's student ``forward`` and teacher ``forward_teacher`` in place.

    Regional: the backbones and heads (all the FLOPs) compile, the losses and EMA stay eager (they
    are already fused). Shapes are static (``dynamic=False``): a student branch gets one graph per
    crop group (global, local), a teacher one, and nothing recompiles afterwards. Parameter names
    and state-dict keys do not change, so checkpoints are the same with or without compile.
    """
    for branch in (model.students.cnn, model.students.vit):
        branch.compile(dynamic=False)
    for branch in (model.teachers.cnn, model.teachers.vit):
        branch.forward_teacher = torch.compile(branch.forward_teacher, dynamic=False)


class TrainStep:
    """One optimisation step of both students and both teachers, set up for ``ctx``'s device.

    Args:
        method: Method settings.
        cfg: Training settings (optimiser, schedules, clipping, switches).
        ctx: This process's device and process group.
        iters_per_epoch: Steps per epoch (the schedules' resolution).
    """

    def __init__(self, method: MOKDConfig, cfg: TrainConfig, ctx: DistContext, iters_per_epoch: int) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.switches = sw = StepSwitches.resolve(cfg, ctx.device)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = MOKD(method).to(ctx.device)
        if sw.channels_last:
            for pair in (self.model.students, self.model.teachers):
                pair.cnn.to(memory_format=torch.channels_last)
        if ctx.distributed:
            self.model.distribute(ctx.device, sync_bn=cfg.sync_bn, static_graph=sw.ddp_static_graph,
                                  bucket_view=sw.ddp_bucket_view)
        if sw.compile:
            compile_branches(self.model)
        self.optimizers = build_optimizers(self.model.students, cfg.optimizer, fused=sw.fused_optim)
        self.scalers = (GradScaler(ctx.device.type), GradScaler(ctx.device.type)) if sw.precision == "fp16" else None
        self.schedules = Schedules.build(cfg, method.epochs, iters_per_epoch, ctx.world_size, method.momentum_teacher)
        self.named = [dict(self.model.students.cnn.named_parameters()), dict(self.model.students.vit.named_parameters())]
        self.clips = (cfg.clip_grad_cnn, cfg.clip_grad_vit)

    @property
    def precision(self) -> str:
        """The resolved autocast precision."""
        return self.switches.precision

    def prepare(self, batch: MultiCropBatch) -> MultiCropBatch:
        """The batch in the memory format the CNN expects (a no-op when the pipeline delivered it so)."""
        if not self.switches.channels_last:
            return batch
        fmt = torch.channels_last
        local = batch.local_crops.contiguous(memory_format=fmt) if batch.local_crops is not None else None
        return replace(batch, global_crops=batch.global_crops.contiguous(memory_format=fmt), local_crops=local)

    def forward_backward(
        self, batch: MultiCropBatch, epoch: int
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Losses under autocast, then fresh gradients of both totals (the FLOP-carrying part of a step)."""
        dtype = AUTOCAST_DTYPES[self.precision]
        with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
            terms = self.model.loss_terms(self.prepare(batch), epoch)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with region("backward"):
            return terms, self.model.backward(terms, self.scalers)

    def __call__(self, batch: MultiCropBatch, step: int, epoch: int) -> dict[str, torch.Tensor]:
        """Runs the step; returns the eight terms and two totals, on the device.

        No host sync, except fp16's ``GradScaler.step`` (one per model, reading its inf check).
        """
        with region("schedules"):
            self.schedules.apply(step, *self.optimizers)
        terms, (loss_cnn, loss_vit) = self.forward_backward(batch, epoch)
        for i, opt in enumerate(self.optimizers):
            with region("clip"):
                if self.clips[i]:
                    if self.scalers:
                        self.scalers[i].unscale_(opt)
                    clip_per_parameter(list(self.named[i].values()), self.clips[i], fused=self.cfg.fused_clip)
                if epoch < self.cfg.freeze_last_layer:
                    drop_last_layer_grads(self.named[i])
            with region("optimizer"):
                if self.scalers:
                    self.scalers[i].step(opt)
                    self.scalers[i].update()
                else:
                    opt.step()
        with region("ema"):
            self.model.update_teachers(float(self.schedules.momentum[step]))
        return {**terms, "loss_cnn": loss_cnn, "loss_vit": loss_vit}

