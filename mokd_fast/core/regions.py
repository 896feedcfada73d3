"""Named regions of the step for ``torch.profiler`` (``tools/benchmark.py --mode profile``).

A region is a ``record_function`` range named ``region:<name>``; ``bench.profile`` attributes device
time to the innermost regions around each op (and backward ops to the region of their forward op).
Inside code that ``torch.compile`` traces, a region is a no-op: Dynamo drops profiler ranges anyway
(and logs a warning for each), so a compiled branch shows as one region in the profile.
"""

import contextlib

import torch
from torch.profiler import record_function

REGION_PREFIX = "region:"


def region(name: str) -> contextlib.AbstractContextManager:
    """A profiler range for ``name`` (about a microsecond of host time when no profiler runs)."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return record_function(REGION_PREFIX + name)
