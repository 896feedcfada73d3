"""Timing of the training step (``tools/benchmark.py --mode step|e2e``): throughput, latency, memory, MFU.

The step timed is ``engine.step.TrainStep``, the one ``train.py`` runs, for any method. ``with_switches(baseline=True)``
turns every speed switch the method has off, which executes the step the way the official code
does. MOKD: two backward passes, the per-parameter EMA loop, the per-pair loss loops, the
per-parameter clip loop and optimisers, no compile, NCHW, and fp16 with two grad scalers on CUDA
(fp32 on CPU). DoGo: two backward passes, per-parameter Adam loops, no compile, NCHW, fp32.
"""

import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mokd_fast.core.distributed import DistContext
from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.switches import StepSwitches
from mokd_fast.engine.step import TrainStep
from mokd_fast.methods import entry_for_config
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy

# Switch name -> (config it lives in, value when off). "precision" off means fp32. A method has the
# method-config switches it declares (MOKD all three, DoGo single_backward).
SWITCHES = {
    "compile": ("train", False),
    "channels_last": ("train", False),
    "fused_optim": ("train", False),
    "fused_clip": ("train", False),
    "fused_loss": ("method", False),
    "fused_ema": ("method", False),
    "single_backward": ("method", False),
    "precision": ("train", "fp32"),
}


# The precision the official code of each method trains in on CUDA (MOKD's recipe: --use_fp16 True).


def switches_on(method: Any, cfg: RunConfig, device: torch.device) -> set[str]:
    """The switches on for this device under these configs (``auto`` resolved)."""
    resolved = StepSwitches.resolve(cfg, device)
    on = {name for name in ("compile", "channels_last", "fused_optim") if getattr(resolved, name)}
    on |= {name for name in ("fused_loss", "fused_ema", "single_backward") if getattr(method, name, False)}
    on |= {"fused_clip"} if cfg.fused_clip else set()
    return on | ({"precision"} if resolved.precision != "fp32" else set())


def with_switches(method: Any, cfg: RunConfig, off: set[str], device: torch.device,
                  baseline: bool = False) -> tuple[Any, RunConfig]:
    """The configs with the ``off`` switches off; ``baseline`` turns all off, in the official precision."""
    method_changes, train_changes = {}, {}
    for name in (set(SWITCHES) if baseline else off):
        where, value = SWITCHES[name]
        if where == "method" and not hasattr(method, name):
            continue
        (method_changes if where == "method" else train_changes)[name] = value
    if baseline and device.type == "cuda":
        train_changes["precision"] = entry_for_config(method)[1].method_class().official_cuda_precision
    return replace(method, **method_changes), replace(cfg, **train_changes)


SYNTHETIC_CLASSES = 10


def synthetic_labels(images: int) -> torch.Tensor:
    """``[images]`` classes of a synthetic training set (image i is of class i mod 10), for methods that need labels."""
    return torch.arange(images) % SYNTHETIC_CLASSES


def synthetic_batches(policy: MultiCropPolicy, batch: int, device: torch.device) -> Iterator[MultiCropBatch]:
    """The same normalised random batch of ``policy``'s views forever, already on the device (the step alone).

    The batch holds images 0..B-1 of a ``synthetic_labels`` training set, with their labels and indices.
    """
    gen = torch.Generator().manual_seed(0)
    size, n_local = policy.global_views[0].size, policy.local_crops_number
    g = torch.randn(policy.n_global * batch, 3, size, size, generator=gen).to(device)
    loc = (torch.randn(n_local * batch, 3, policy.local_view.size, policy.local_view.size, generator=gen).to(device)
           if n_local else None)
    indices = torch.arange(batch, device=device)
    labels = synthetic_labels(batch).to(device)
    while True:
        yield MultiCropBatch(g, loc, labels, policy.n_global, indices)


def flops_per_sample(step: TrainStep, batch: MultiCropBatch) -> float:
    """Forward + backward FLOPs of one step per image, counted by ``torch.utils.flop_counter`` (eager).

    Counts matmuls, convolutions and attention of the trained models and any no-grad ones; the
    element-wise work (norms, softmax, EMA, optimiser) is left out, as MFU conventionally does.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        step.forward_backward(batch, step.info(0, 0))
    for opt in step.optimizers.values():
        opt.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch.batch_size


def matmul_peak_flops(device: torch.device, dtype: torch.dtype | None = None) -> float:
    """A measured dense matmul rate in FLOP/s: the MFU denominator when no ``--peak_tflops`` is given.

    ``dtype`` defaults to bf16 on CUDA and fp32 on CPU (fp32 on CUDA runs as TF32 only if torch's
    matmul precision allows it; the default, "highest", measures true fp32).
    """
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = 8192 if cuda else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if cuda else 5
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if cuda:
        torch.cuda.synchronize(device)  # sync point: the timed matmuls are done
    return 2 * n**3 * reps / (time.perf_counter() - start)


def time_steps(step: TrainStep, batches: Iterator[MultiCropBatch], steps: int, warmup: int) -> dict:
    """Runs ``warmup`` then ``steps`` steps; per-step wall time (synchronised on CUDA) and data wait."""
    device = step.ctx.device
    cuda = device.type == "cuda"
    waits, times = [], []
    for i in range(warmup + steps):
        tick = time.perf_counter()
        batch = next(batches)  # blocks on the pipeline: the data wait
        got = time.perf_counter()
        step(batch, i, epoch=0)
        if cuda:
            torch.cuda.synchronize(device)  # the step's kernels are done: its true time
        if i == warmup - 1 and cuda:
            torch.cuda.reset_peak_memory_stats(device)
        if i >= warmup:
            waits.append(got - tick)
            times.append(time.perf_counter() - tick)
    total = sum(times)
    ms = sorted(1000 * t for t in times)
    return {"seconds": round(total, 3), "step_ms_median": round(statistics.median(ms), 2),
            "step_ms_p90": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 2), "step_ms_max": round(ms[-1], 2),
            "data_wait": round(sum(waits) / total, 4),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None}


def bench_step(method: Any, cfg: RunConfig, ctx: DistContext, batches: Iterator[MultiCropBatch],
               steps: int, warmup: int, labels: torch.Tensor | None = None) -> dict:
    """One configuration: builds its step and times it.

    ``samples_per_s`` is the batch over the median step time, so one slow step (a page fault, a
    burst of other work on the machine) cannot decide a comparison; ``samples_per_s_mean`` is over
    the total time, and ``step_ms_p90``/``step_ms_max`` show how unsteady the steps were. ``labels``:
    the training set's classes, for a method that needs them.
    """
    torch.manual_seed(cfg.seed)
    step = TrainStep(method, cfg, ctx, iters_per_epoch=max(1, warmup + steps), labels=labels)
    timing = time_steps(step, batches, steps, warmup)
    rate = 1000 * cfg.batch_size_per_gpu / timing["step_ms_median"]
    return {"switches": vars(step.switches), "samples_per_s": round(rate, 2),
            "samples_per_s_mean": round(steps * cfg.batch_size_per_gpu / timing["seconds"], 2),
            "crops_per_s": round(rate * len(step.model.policy.views()), 1), **timing}


def count_flops(method: Any, cfg: RunConfig, ctx: DistContext, batch: MultiCropBatch,
                labels: torch.Tensor | None = None) -> float:
    """FLOPs per image of one step, on an eager copy of the step (the counter sees through no graph)."""
    torch.manual_seed(cfg.seed)
    step = TrainStep(method, replace(cfg, compile=False), ctx, iters_per_epoch=1, labels=labels)
    return flops_per_sample(step, batch)
