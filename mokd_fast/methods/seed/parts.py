"""The composition bound of SEED's step (``tools/benchmark.py --mode step --method seed --parts``).

SEED's step cannot be faster than the student's forward and backward on every view plus the
teacher's forward on the same views; each is timed alone, set up like the step (precision, memory
format, compile), and their sum is the bound. The teacher's share of it is what distilling a big
teacher costs: outputs cannot be cached, since the views are new every step.
"""

from collections.abc import Callable

import torch

from mokd_fast.core.precision import AUTOCAST_DTYPES
from mokd_fast.core.switches import StepSwitches
from mokd_fast.methods.seed.config import SEEDConfig, SEEDTrainConfig
from mokd_fast.methods.seed.method import SEED
from pipelines.batch import MultiCropBatch


def part_functions(method: SEEDConfig, cfg: SEEDTrainConfig, device: torch.device, batch: MultiCropBatch,
                        model: SEED | None = None) -> dict[str, Callable[[], None]]:
    """``student`` (forward + backward over each resolution group) and ``teacher`` (forward, no grad)."""
    sw = StepSwitches.resolve(cfg, device)
    model = model if model is not None else SEED(method, cfg).to(device)
    if sw.channels_last:
        model.channels_last()
    fmt = torch.channels_last if sw.channels_last else torch.contiguous_format
    groups = [batch.global_crops] + ([batch.local_crops] if batch.local_crops is not None else [])
    groups = [x.to(device).contiguous(memory_format=fmt) for x in groups]  # [B | L*B, 3, H, W]
    dtype = AUTOCAST_DTYPES[sw.precision]
    student = torch.compile(model.student.embed, dynamic=False) if sw.compile else model.student.embed
    teacher = torch.compile(model.teacher, dynamic=False) if sw.compile else model.teacher

    def student_part() -> None:
        for p in model.student.parameters():
            p.grad = None
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = sum(student(x).float().mean() for x in groups)
        loss.backward()

    def teacher_part() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for x in groups:
                teacher(x)

    return {"student": student_part, "teacher": teacher_part}
