"""The training step of every method and everything it owns: model, optimisers, scalers, schedules, speed switches.

Kept apart from the run loop (``engine.trainer.Trainer``) so ``tools/benchmark.py --mode step`` times exactly
the step ``train.py`` runs, with any switch turned off.
"""

from dataclasses import replace
from typing import Any

import torch
from torch.amp import GradScaler

from mokd_fast.core.distributed import DistContext
from mokd_fast.core.precision import AUTOCAST_DTYPES
from mokd_fast.core.regions import region
from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.switches import StepSwitches
from mokd_fast.engine.gradients import clip_per_parameter, drop_last_layer_grads
from mokd_fast.engine.schedules import StepSchedules
from mokd_fast.methods import build_method
from mokd_fast.methods.base import Losses, StepInfo
from mokd_fast.methods.common.backward import backward_totals
from pipelines.batch import MultiCropBatch


class TrainStep:
    """One optimisation step of any method, set up for ``ctx``'s device.

    The method computes its losses; everything else is done here, the same for every method:
    schedules, autocast, backward (with a grad scaler per optimiser under fp16), per-parameter
    clipping, last-layer freezing, the optimiser steps, then the method's ``after_step``.

    Args:
        method: The method's settings (its class picks the method: ``MOKDConfig`` is MOKD).
        cfg: Training settings (optimiser, schedules, clipping, switches).
        ctx: This process's device and process group.
        iters_per_epoch: Steps per epoch (the schedules' resolution).
        labels: ``[N]`` the training set's classes in dataset-index order, for a method that ``needs_labels``.
    """

    def __init__(self, method: Any, cfg: RunConfig, ctx: DistContext, iters_per_epoch: int,
                 labels: torch.Tensor | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.switches = sw = StepSwitches.resolve(cfg, ctx.device)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = build_method(method, cfg, labels).to(ctx.device)
        if sw.channels_last:
            self.model.channels_last()
        if ctx.distributed:
            self.model.distribute(ctx.device, sync_bn=cfg.sync_bn, static_graph=sw.ddp_static_graph,
                                  bucket_view=sw.ddp_bucket_view)
        if sw.compile:
            self.model.compile_regions()
        self.specs = self.model.optimizers(fused=sw.fused_optim)
        self.optimizers = {name: spec.optimizer for name, spec in self.specs.items()}
        self.scalers = ({name: GradScaler(ctx.device.type) for name in self.specs} if sw.precision == "fp16"
                        else None)
        self.schedules = StepSchedules(self.model.schedules(iters_per_epoch, ctx.world_size))

    @property
    def precision(self) -> str:
        """The resolved autocast precision."""
        return self.switches.precision

    def info(self, step: int, epoch: int) -> StepInfo:
        """The ``StepInfo`` the method sees at ``step``."""
        return StepInfo(step, epoch, self.schedules.values(step))

    def prepare(self, batch: MultiCropBatch) -> MultiCropBatch:
        """The batch in channels-last memory when the switch is on (a no-op when the pipeline delivered it so)."""
        if not self.switches.channels_last:
            return batch
        fmt = torch.channels_last
        local = batch.local_crops.contiguous(memory_format=fmt) if batch.local_crops is not None else None
        return replace(batch, global_crops=batch.global_crops.contiguous(memory_format=fmt), local_crops=local)

    def forward_backward(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        """Losses under autocast, then fresh gradients of every total (the FLOP-carrying part of a step)."""
        dtype = AUTOCAST_DTYPES[self.precision]
        with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
            losses = self.model.losses(self.prepare(batch), info)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        with region("backward"):
            backward_totals(losses.totals, self.scalers, self.model.single_backward)
        return losses

    def __call__(self, batch: MultiCropBatch, step: int, epoch: int) -> dict[str, torch.Tensor]:
        """Runs the step; returns the method's terms and ``loss_<optimiser>`` totals, on the device.

        No host sync, except fp16's ``GradScaler.step`` (one per optimiser, reading its inf check).
        """
        info = self.info(step, epoch)
        with region("schedules"):
            # Looked up each step: loading an optimiser's state (resume) replaces its param_groups list.
            self.schedules.apply(step, [(spec.optimizer.param_groups, spec.schedules) for spec in self.specs.values()])
        losses = self.forward_backward(batch, info)
        for name, spec in self.specs.items():
            opt, scaler = spec.optimizer, self.scalers[name] if self.scalers else None
            with region("clip"):
                if spec.clip:
                    if scaler:
                        scaler.unscale_(opt)
                    clip_per_parameter(list(spec.params.values()), spec.clip, fused=self.cfg.fused_clip)
                if epoch < spec.freeze_last_layer:
                    drop_last_layer_grads(spec.params)
            with region("optimizer"):
                if scaler:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
        with region("ema"):
            self.model.after_step(info)
        return {**losses.terms, **{f"loss_{name}": total for name, total in losses.totals.items()}}
