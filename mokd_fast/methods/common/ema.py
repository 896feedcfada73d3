"""The teachers' exponential moving average of the students' parameters."""

import torch
import torch.nn as nn


class TeacherEMA:
    """``teacher <- m * teacher + (1 - m) * student`` over every parameter, BN buffers excluded.

    Parameters are paired by name once, at construction, so a mismatch between the two networks is
    an error at build time rather than a silent mis-pairing. The fused form is one
    ``torch._foreach_lerp_`` over all pairs of both models (a handful of kernels, no per-parameter
    Python on the hot path); the plain form is the official per-parameter loop.

    Args:
        student: Module whose parameters are followed.
        teacher: Module of the same structure whose parameters are updated in place.
        fused: Use the fused form.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, fused: bool = True) -> None:
        s_named, t_named = dict(student.named_parameters()), dict(teacher.named_parameters())
        if s_named.keys() != t_named.keys():
            diff = sorted(set(s_named) ^ set(t_named))[:5]
            raise ValueError(f"student and teacher parameters differ, e.g. {diff}")
        self.student_params = [s_named[n] for n in s_named]
        self.teacher_params = [t_named[n] for n in s_named]
        self.fused = fused

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """Moves every teacher parameter towards its student by ``1 - momentum``."""
        if self.fused:
            torch._foreach_lerp_(self.teacher_params, self.student_params, 1.0 - momentum)
            return
        for param_s, param_t in zip(self.student_params, self.teacher_params):
            param_t.mul_(momentum).add_((1 - momentum) * param_s.detach())
