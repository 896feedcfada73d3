"""The composition bound of a step (``tools/benchmark.py --mode step --parts``): its unavoidable pieces timed alone.

A method with a bound names, in ``Method.parts_module``, a module whose ``part_functions(cfg, train,
device, batch)`` returns ``{piece: function}`` (MOKD: backbones and heads; SEED: student and teacher);
each piece runs alone, set up like the step, and the sum of their medians is the bound the step is
judged against (``ours / bound`` in the benchmark record).
"""

import importlib
import statistics
import time
from typing import Any

import torch

from mokd_fast.methods import entry_for_config
from pipelines.batch import MultiCropBatch


def time_parts(method: Any, cfg: Any, device: torch.device, batch: MultiCropBatch, steps: int, warmup: int) -> dict:
    """Median and p90 milliseconds of each piece, their sum, and the samples/s bound it implies.

    ``method``: the settings of a method whose class names a ``parts_module``.

    Raises:
        ValueError: The method has no breakdown into parts.
    """
    cuda = device.type == "cuda"
    name, entry = entry_for_config(method)
    module = entry.method_class().parts_module
    if module is None:
        raise ValueError(f"no parts breakdown for --method {name}; it names no parts_module")
    parts = importlib.import_module(module).part_functions(method, cfg, device, batch)
    figures = {}
    for name, fn in parts.items():
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(device)  # sync point: the piece's kernels are done
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - start))
        times.sort()
        figures[name] = {"ms_median": round(statistics.median(times), 3),
                         "ms_p90": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3)}
    bound_ms = sum(f["ms_median"] for f in figures.values())
    return {"parts": figures, "bound_ms": round(bound_ms, 3),
            "bound_samples_per_s": round(1000 * batch.batch_size / bound_ms, 2)}
