"""Where the step's time goes (``tools/benchmark.py --mode profile``): regions, kernels, launches, idle GPU.

A few steps of the step ``train.py`` runs are recorded with ``torch.profiler``. Each op's self time
(CUDA kernel time on a GPU, CPU self time otherwise) goes to the innermost ``region:`` ranges around
it (``mokd_fast.core.regions``), joined as a path such as ``cnn_student/backbone``. Backward ops run in
autograd's threads, outside every range, so they are matched to their forward op by the autograd
sequence number and reported as ``<forward region> [bwd]``. What no region holds is ``unattributed``.
On a GPU the table closes with the kernel time no op claimed and the time no kernel ran (the idle
fraction), so its rows add up to the step. The summary is plain JSON and a markdown table, readable
without a GPU.
"""

import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from mokd_fast.core.regions import REGION_PREFIX, region
from mokd_fast.engine.step import TrainStep
from pipelines.batch import MultiCropBatch

BACKWARD_PREFIX = "autograd::engine::evaluate_function"
UNATTRIBUTED = "unattributed"


def _region_path(event) -> str | None:
    """``a/b`` from the ``region:`` ranges enclosing ``event`` (outermost first), or None."""
    names = []
    while event is not None:
        if event.name.startswith(REGION_PREFIX):
            names.append(event.name[len(REGION_PREFIX):])
        event = event.cpu_parent
    return "/".join(reversed(names)) or None


def _backward_root(event):
    """The ``evaluate_function`` event a backward op runs under, or None for a forward op."""
    while event is not None:
        if event.name.startswith(BACKWARD_PREFIX):
            return event
        event = event.cpu_parent
    return None


def _self_time_us(event, on_device: bool) -> float:
    if on_device:
        return sum(k.duration for k in event.kernels)
    return event.self_cpu_time_total


def attribute(events, on_device: bool) -> dict[str, float]:
    """Microseconds per region path over ``events`` (``prof.events()``), backward ops to their forward's region."""
    cpu_events = sorted((e for e in events if e.device_type == DeviceType.CPU), key=lambda e: e.time_range.start)
    # Every op records the autograd sequence number it would give a graph node, and the counter moves
    # only when a node is made: the last forward op to record a number is the one that made its node.
    forward_region: dict[tuple[int, int], str] = {}
    for e in cpu_events:
        if e.sequence_nr >= 0 and _backward_root(e) is None:
            forward_region[(e.thread, e.sequence_nr)] = _region_path(e) or UNATTRIBUTED
    totals: dict[str, float] = defaultdict(float)
    for e in cpu_events:
        spent = _self_time_us(e, on_device)
        if not spent:
            continue
        root = _backward_root(e)
        if root is not None and root.sequence_nr >= 0:
            where = forward_region.get((root.fwd_thread, root.sequence_nr), UNATTRIBUTED) + " [bwd]"
        elif root is not None:
            where = (_region_path(e) or "backward") + " [bwd, no forward op]"  # e.g. AccumulateGrad
        else:
            where = _region_path(e) or UNATTRIBUTED
        totals[where] += spent
    return dict(totals)


def _busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def profile_step(step: TrainStep, batches: Iterator[MultiCropBatch], steps: int, warmup: int,
                 trace_path: str | None = None) -> dict:
    """Runs ``warmup`` unrecorded steps (compilation, autotuning), then records ``steps`` steps.

    Returns:
        ``step_ms`` (wall, per step), ``time_basis``, ``regions`` (path, ms per step, share of the
        step), ``regions_sum_over_step``, ``top_kernels`` (25 by time: name, calls and ms per step),
        ``launches_per_step`` and ``gpu_idle_fraction`` (None on CPU).
    """
    device = step.ctx.device
    cuda = device.type == "cuda"
    for i in range(warmup):
        step(next(batches), i, epoch=0)
    if cuda:
        torch.cuda.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step_windows = []
    with profile(activities=activities) as prof:
        for i in range(warmup, warmup + steps):
            batch = next(batches)
            start = time.perf_counter()
            with region("step"):
                step(batch, i, epoch=0)
                if cuda:
                    torch.cuda.synchronize(device)  # sync point: the step's kernels are inside its range
            step_windows.append(time.perf_counter() - start)
    if trace_path:
        prof.export_chrome_trace(trace_path)
    events = prof.events()
    step_ms = 1000 * sum(step_windows) / steps
    totals = attribute(events, on_device=cuda)
    regions = sorted(((path.removeprefix("step/").removeprefix("step"), us / 1000 / steps)
                      for path, us in totals.items()), key=lambda r: -r[1])
    kernels = [e for e in events if e.device_type == DeviceType.CUDA] if cuda else []
    by_name: dict[str, list[float]] = defaultdict(list)
    for e in kernels or [e for e in events if e.device_type == DeviceType.CPU and e.self_cpu_time_total > 0
                         and not e.name.startswith(REGION_PREFIX)]:
        by_name[e.name].append(e.time_range.elapsed_us() if cuda else e.self_cpu_time_total)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:25]
    idle = None
    if cuda:
        marks = [e.time_range for e in events if e.name == REGION_PREFIX + "step" and e.device_type == DeviceType.CPU]
        window = sum(r.elapsed_us() for r in marks)
        busy = _busy_us([(k.time_range.start, k.time_range.end) for k in kernels])
        idle = round(max(0.0, 1 - busy / window), 4) if window else None
    if cuda:
        # Kernels no op claimed (none expected) and the time no kernel ran, so the table adds up to the step.
        linked = sum(totals.values())
        regions.append(("kernels linked to no op", max(0.0, sum(k.time_range.elapsed_us() for k in kernels) - linked)
                        / 1000 / steps))
        if idle is not None:
            regions.append(("GPU idle (no kernel running)", idle * step_ms))
    regions_ms = sum(ms for _, ms in regions)
    return {
        "steps": steps, "warmup": warmup, "step_ms": round(step_ms, 3),
        "time_basis": "CUDA kernel time" if cuda else "CPU self time (no GPU)",
        "regions": [{"region": path or "(step, outside every region)", "ms_per_step": round(ms, 3),
                     "share": round(ms / step_ms, 4)} for path, ms in regions],
        "regions_sum_over_step": round(regions_ms / step_ms, 4),
        "top_kernels" if cuda else "top_ops": [
            {"name": name[:120], "calls_per_step": round(len(times) / steps, 2),
             "ms_per_step": round(sum(times) / 1000 / steps, 3), "share": round(sum(times) / 1000 / steps / step_ms, 4)}
            for name, times in top],
        "launches_per_step": round(len(kernels) / steps, 1) if cuda else None,
        "gpu_idle_fraction": idle,
    }


def markdown(record: dict) -> str:
    """The profile as two markdown tables (regions, then the top kernels or ops)."""
    lines = [f"Step {record['step_ms']} ms (wall, mean of {record['steps']}); times are {record['time_basis']}; "
             f"regions add up to {record['regions_sum_over_step']:.1%} of the step; launches per step: "
             f"{record['launches_per_step']}; GPU idle: "
             f"{'n/a' if record['gpu_idle_fraction'] is None else format(record['gpu_idle_fraction'], '.1%')}.",
             "", "| region | ms per step | share of step |", "|---|---|---|"]
    lines += [f"| {r['region']} | {r['ms_per_step']} | {r['share']:.1%} |" for r in record["regions"]]
    key = "top_kernels" if "top_kernels" in record else "top_ops"
    lines += ["", f"| {key.replace('_', ' ')} | calls per step | ms per step | share |", "|---|---|---|---|"]
    lines += [f"| `{k['name']}` | {k['calls_per_step']} | {k['ms_per_step']} | {k['share']:.1%} |" for k in record[key]]
    return "\n".join(lines)
