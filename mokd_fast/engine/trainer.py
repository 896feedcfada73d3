"""The pre-training loop: schedules, autocast, backward, clipping, optimiser steps, EMA, logs, checkpoints."""

import itertools
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mokd_fast.core.checkpoint_io import atomic_save
from mokd_fast.core.distributed import check_on_main, gather_objects, init_distributed
from mokd_fast.core.errors import UsageError
from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.settings import flat_settings
from mokd_fast.core.switches import StepSwitches
from mokd_fast.engine.checkpoint import (
    build_checkpoint,
    capture_rng,
    load_checkpoint,
    read_checkpoint,
    restore_rng,
)
from mokd_fast.engine.collapse import CollapseWatch
from mokd_fast.engine.loss_guard import LossGuard
from mokd_fast.engine.run_log import RunLog, Throughput
from mokd_fast.engine.step import TrainStep
from mokd_fast.eval.periodic import PeriodicKNN
from mokd_fast.methods import entry_for_config
from pipelines import PIPELINES, resolve_pipeline
from pipelines.batch import MultiCropBatch


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_output_dir(path: Path, resuming: bool) -> None:
    """Creates the run directory and refuses to overwrite another run's checkpoint.

    Raises:
        UsageError: The directory cannot be created or written, or holds a checkpoint and this run
            does not resume.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{time.time_ns()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--output_dir {path} is not writable ({err.strerror}); choose another directory") from err
    if (path / "checkpoint.pth").exists() and not resuming:
        raise UsageError(
            f"--output_dir {path} already holds checkpoint.pth from an earlier run; pass "
            f"--resume {path / 'checkpoint.pth'} to continue it, or choose another --output_dir"
        )


def run_settings(method: Any, cfg: RunConfig) -> dict[str, Any]:
    """The run's settings as one flat dict (``method`` first): config.yaml and the checkpoint's copy."""
    return {"method": entry_for_config(method)[0], **flat_settings(method, cfg)}


class Trainer:
    """One pre-training run of any method on this process (one of ``world_size`` under torchrun).

    Args:
        method: The method's settings (their class picks the method).
        cfg: Training settings.
    """

    def __init__(self, method: Any, cfg: RunConfig) -> None:
        self.method, self.cfg = method, cfg
        self.ctx = ctx = init_distributed(cfg.device, cfg.dist_url)
        self.out = Path(cfg.output_dir)
        check_on_main(ctx, lambda: prepare_output_dir(self.out, resuming=bool(cfg.resume)))
        self.config = run_settings(method, cfg)
        method_class = entry_for_config(method)[1].method_class()
        # Read before the data and models are built, so that a wrong file is reported at once.
        resumed = read_checkpoint(Path(cfg.resume), self.config, cfg.trust_checkpoint,
                                  method_class.added_settings) if cfg.resume else None
        self.policy = policy = method_class.views(method, cfg)
        self.pipeline_name, data_path = resolve_pipeline(cfg.pipeline, cfg.data_path, ctx.device)
        # The backends that cut views with gpu_augment take the resampler.
        options = {"resampler": cfg.crop_resampler} if self.pipeline_name in ("ffcv", "nvjpeg") else {}
        channels_last = StepSwitches.resolve(cfg, ctx.device).channels_last  # crops arrive as the CNN wants them
        self.pipeline = PIPELINES[self.pipeline_name](data_path, policy, cfg.batch_size_per_gpu, ctx.world_size,
                                                      ctx.rank, cfg.seed, cfg.num_workers, ctx.device,
                                                      channels_last=channels_last, **options)
        self.data_steps = len(self.pipeline)  # steps in one pass over the data
        self.iters_per_epoch = cfg.epoch_length or self.data_steps  # steps in a schedule epoch
        total = method.epochs * self.iters_per_epoch
        self.end_step = min(total, cfg.max_steps) if cfg.max_steps else total

        seed_everything(cfg.seed)  # identical initial weights on every rank
        method_cls = entry_for_config(method)[1].method_class()
        labels = self.pipeline.sample_labels() if method_cls.needs_labels else None
        self.step = TrainStep(method, cfg, ctx, self.iters_per_epoch, labels)
        self.model, self.optimizers, self.scalers = self.step.model, self.step.optimizers, self.step.scalers
        self.precision = self.step.precision

        self.start_step, rng_states = 0, None
        if resumed is not None:
            self.start_step, rng_states = load_checkpoint(resumed, Path(cfg.resume), self.model, self.optimizers,
                                                          self.scalers, self.iters_per_epoch, self.data_steps)
            del resumed  # the weights now live in the model and optimisers
        if rng_states is not None:
            restore_rng(rng_states[ctx.rank], ctx.device)
        else:
            seed_everything(cfg.seed + ctx.rank)  # own drop-path draws per rank
        self.last_good = (f"The last good checkpoint is {cfg.resume} (step {self.start_step})" if cfg.resume
                          else "No checkpoint was written yet")
        self.guard = LossGuard(ctx)
        self.watch = CollapseWatch(window=cfg.collapse_window, log_k=self.model.collapse_log_k(),
                                   advice=self.model.collapse_advice())
        self.last_step = self.start_step
        self.collapse_warning: str | None = None
        self.meter = Throughput()
        self.knn = PeriodicKNN(cfg.knn_data, cfg.knn_every, cfg.knn_k, cfg.knn_input_size or policy.global_views[0].size,
                               cfg.batch_size_per_gpu, cfg.num_workers, ctx, cfg.knn_bn) if cfg.knn_every else None

    def _batches(self) -> Iterator[tuple[int, int, MultiCropBatch]]:
        """``(step, schedule epoch, batch)`` from the start step to the end, timing the wait for each batch.

        The data run pass after pass (each pass shuffled by its own index) whatever the schedule
        epoch's length, so a resumed run sees the batches an uninterrupted one would.
        """
        first_pass, first_batch = divmod(self.start_step, self.data_steps)
        epochs = (self.pipeline.epoch(e, first_batch if e == first_pass else 0) for e in itertools.count(first_pass))
        batches = itertools.islice(itertools.chain.from_iterable(epochs), self.end_step - self.start_step)
        for step in range(self.start_step, self.end_step):
            tick = time.perf_counter()
            batch = next(batches)  # blocks on the data workers: the data wait
            self.meter.waited(time.perf_counter() - tick)
            yield step, step // self.iters_per_epoch, batch

    def fit(self) -> dict[str, Any]:
        """Trains from the start (or resume) step to the end; returns the run summary.

        Raises:
            NonFiniteLoss: A loss became NaN/inf; checkpoints written before it are kept.
        """
        log = RunLog(self.out, self.start_step, self.end_step, self.ctx.is_main, self.cfg.tensorboard)
        if self.ctx.is_main:
            self._describe(log)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        try:
            if self.knn and self.start_step == 0:
                tick = time.perf_counter()
                log.evaluated({"step": 0, "epoch": 0, **self.knn(self.model)})  # the random initialisation
                self.meter.outside(time.perf_counter() - tick)
            for step, epoch, batch in self._batches():
                self.guard.record(step, epoch, self.step(batch, step, epoch))
                self.meter.stepped()
                log.stepped()
                done = self.last_step = step + 1
                collapsed = False
                if done % self.cfg.log_every == 0 or done == self.end_step:
                    record = self._record(done, epoch)  # sync point
                    log.write(record)
                    warning = self.watch.update(done, record)  # the same on every rank: the record is reduced
                    if warning:
                        log.message(warning)
                        self.collapse_warning = warning
                        collapsed = self.cfg.stop_on_collapse
                epoch_end = done % self.iters_per_epoch == 0
                keeper = epoch_end and (epoch % self.cfg.saveckp_freq == 0 or epoch == self.method.epochs - 1)
                tick = time.perf_counter()
                if (done % self.data_steps == 0 or keeper or done == self.end_step or collapsed
                        or (self.cfg.ckpt_every_steps and done % self.cfg.ckpt_every_steps == 0)):
                    self._save(done, epoch if keeper else None)
                if self.knn and ((epoch_end and self.knn.due(epoch)) or done == self.end_step or collapsed):
                    log.evaluated({"step": done, "epoch": epoch, **self.knn(self.model)})
                self.meter.outside(time.perf_counter() - tick)  # not training: out of the next log line's rate
                if collapsed:
                    log.message(f"stopping at step {done} (--stop_on_collapse); checkpoint {self.out / 'checkpoint.pth'}")
                    break
        finally:
            log.close()
        summary = self._summary()
        if self.ctx.is_main:
            print(f"done: {summary['steps']} steps ({summary['epochs_done']:.2f} epochs) in {summary['seconds']} s, "
                  f"{summary['samples_per_s']} samples/s ({summary['samples_per_s_per_process']} per process), "
                  f"data wait {summary['data_wait']:.1%}; checkpoint {summary['checkpoint']}")
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def _record(self, done: int, epoch: int) -> dict[str, Any]:
        rate, wait = self.meter.window(self.cfg.batch_size_per_gpu * self.ctx.world_size)
        return {
            "step": done, "epoch": epoch, **self.guard.window_means(self.last_good),
            **self.step.schedules.values(done - 1), **self.model.log_values(epoch),
            "samples_per_s": rate, "data_wait": wait,
        }

    def _save(self, done: int, keeper_epoch: int | None) -> None:
        """Writes checkpoint.pth (and ``checkpoint<keeper_epoch>.pth``); every rank takes part (RNG gather)."""
        self.guard.check(self.last_good)  # never save weights from after a non-finite step
        rng_states = gather_objects(self.ctx, capture_rng(self.ctx.device))
        latest = self.out / "checkpoint.pth"
        if self.ctx.is_main:
            ckpt = build_checkpoint(self.model, self.optimizers, self.scalers, done, self.iters_per_epoch,
                                    rng_states, self.config, self.data_steps)
            atomic_save(ckpt, latest)
            if keeper_epoch is not None:
                atomic_save(ckpt, self.out / f"checkpoint{keeper_epoch:04}.pth")
        self.last_good = f"The last good checkpoint is {latest} (step {done})"

    def _describe(self, log: RunLog) -> None:
        log.message(
            f"{self.model.describe()} on "
            f"{self.ctx.world_size} x {self.ctx.device.type}, {self.precision}; {self.pipeline_name} pipeline, "
            f"{self.pipeline.num_images} images, "
            f"{self.data_steps} steps/epoch of {self.cfg.batch_size_per_gpu} x {self.ctx.world_size}"
            f"{f' (schedule epochs of {self.iters_per_epoch} steps)' if self.cfg.epoch_length else ''}, crops "
            f"{self.policy.summary()}; "
            f"steps {self.start_step} -> {self.end_step}; output {self.out}"
        )
        for warning in self.cfg.warnings:
            log.message(f"warning: {warning}")
        if self.ctx.distributed and self.cfg.sync_bn and self.ctx.device.type != "cuda":
            log.message("SyncBatchNorm needs CUDA: on CPU each process normalises with its own batch statistics")

    def _summary(self) -> dict[str, Any]:
        elapsed, rate, wait = self.meter.run(self.cfg.batch_size_per_gpu * self.ctx.world_size)
        return {
            "steps": self.last_step, "epochs_done": self.last_step / self.iters_per_epoch,
            "seconds": round(elapsed, 1), "samples_per_s": round(rate, 2),
            "samples_per_s_per_process": round(rate / self.ctx.world_size, 2), "data_wait": round(wait, 3),
            "checkpoint_and_eval_seconds": round(self.meter.run_outside, 1),
            "checkpoint": str(self.out / "checkpoint.pth"), "collapse_warning": self.collapse_warning,
        }
