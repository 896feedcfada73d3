"""MOKD's eight loss terms: six centred DINO losses and two feature-search cross-entropies."""

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from mokd_fast.core.precision import at_least_fp32
from mokd_fast.methods.common.schedules import teacher_temp_schedule
from mokd_fast.methods.mokd.branches import StudentOutputs, TeacherOutputs
from mokd_fast.methods.mokd.config import MOKDConfig

LOSS_TERMS = (
    "cnn_self", "cnn_thead", "cnn_cross", "cnn_search",
    "vit_self", "vit_thead", "vit_cross", "vit_search",
)
# The six centred losses, in the row order of the ``centers`` buffer, with (in the official names)
# the teacher output each one centres: loss_cnn_fn <- t_cnn_m, loss_cnn_thead_fn <- t_cnn_t,
# loss_cnn_ct_fn <- t_vit_m, loss_vit_fn <- t_vit_m, loss_vit_thead_fn <- t_vit_t, loss_vit_ct_fn <- t_cnn_m.
CENTERED_TERMS = ("cnn_self", "cnn_thead", "cnn_cross", "vit_self", "vit_thead", "vit_cross")
OFFICIAL_LOSS_STATE = {
    "loss_cnn_fn": "cnn_self",
    "loss_cnn_thead_fn": "cnn_thead",
    "loss_cnn_ct_fn": "cnn_cross",
    "loss_vit_fn": "vit_self",
    "loss_vit_thead_fn": "vit_thead",
    "loss_vit_ct_fn": "vit_cross",
}


def _pairs(students: StudentOutputs, teachers: TeacherOutputs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(student scores, teacher scores) of each centred loss."""
    return {
        "cnn_self": (students.cnn_dino, teachers.cnn_dino),
        "cnn_thead": (students.cnn_thead, teachers.cnn_thead),
        "cnn_cross": (students.cnn_dino, teachers.vit_dino),
        "vit_self": (students.vit_dino, teachers.vit_dino),
        "vit_thead": (students.vit_thead, teachers.vit_thead),
        "vit_cross": (students.vit_dino, teachers.cnn_dino),
    }


def _search_pairs(
    students: StudentOutputs, teachers: TeacherOutputs
) -> tuple[tuple[str, torch.Tensor, torch.Tensor], ...]:
    """(term, student T-head scores over all views, other teacher's search scores over the locals)."""
    return (
        ("cnn_search", students.cnn_thead, teachers.vit_search),
        ("vit_search", students.vit_thead, teachers.cnn_search),
    )


def _all_reduce_sum(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
        return x, dist.get_world_size()
    return x, 1


class MOKDCriterion(nn.Module):
    """Computes the eight terms and advances the six centers, exactly as one official step does.

    Fused form (default): each student output gets ONE fp32 log-softmax, shared by every loss that
    reads it (cnn_self and cnn_cross share the CNN DINO scores; cnn_thead and cnn_search share the CNN
    T-head scores; likewise for the ViT). For a teacher view t and student views v != t the pair sum
    is rewritten as ``sum_t <q_t, sum_v logp_v - logp_t>``: one elementwise contraction instead of a
    loop over 2 x (2 + L) pairs, and no matmul, so TF32 never touches it. All six centers are
    updated with one all-reduce. The plain form replays the official per-pair loops and per-loss
    all-reduces; tests hold the two equal.

    Args:
        cfg: The method's settings (temperatures, schedules, crop count, switch ``fused_loss``).
    """

    def __init__(self, cfg: MOKDConfig) -> None:
        super().__init__()
        self.n_views = 2 + cfg.local_crops_number
        self.student_temp = cfg.student_temp
        self.center_momentum = cfg.center_momentum
        self.fused = cfg.fused_loss
        cnn = teacher_temp_schedule(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs_cnn, cfg.epochs
        )
        vit = teacher_temp_schedule(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs_vit, cfg.epochs
        )
        # Official: cnn_self and cnn_thead warm up over the CNN epochs; the other four centred losses
        # and both search losses over the ViT epochs.
        per_term = [cnn, cnn, vit, vit, vit, vit]
        self.temp_schedules = {name: sched for name, sched in zip(CENTERED_TERMS, per_term)}
        self.search_temp_schedule = vit
        # [epochs, 6] float64 on the model's device: the fused path indexes it without a host copy and
        # rounds to the logits' dtype, as the plain path's Python floats are rounded.
        self.register_buffer("temps", torch.from_numpy(np.stack(per_term, axis=1)), persistent=False)
        self.register_buffer("centers", torch.zeros(len(CENTERED_TERMS), cfg.out_dim))

    def forward(self, students: StudentOutputs, teachers: TeacherOutputs, epoch: int) -> dict[str, torch.Tensor]:
        """Returns the eight named terms (fp32 scalars) and updates the centers in place.

        Args:
            students: Student scores of this step.
            teachers: Teacher scores of this step (no grad).
            epoch: Current epoch; selects the teacher temperatures.
        """
        if not 0 <= epoch < self.temps.shape[0]:
            raise ValueError(f"epoch {epoch} is outside the configured schedule [0, {self.temps.shape[0]})")
        batch = teachers.cnn_dino.shape[0] // 2
        if students.cnn_dino.shape[0] != self.n_views * batch:
            raise ValueError(
                f"student scores have {students.cnn_dino.shape[0]} rows, expected (2 + local_crops_number) "
                f"x batch = {self.n_views} x {batch}"
            )
        terms = self._fused(students, teachers, epoch) if self.fused else self._plain(students, teachers, epoch)
        return {name: terms[name] for name in LOSS_TERMS}

    def _fused(self, students: StudentOutputs, teachers: TeacherOutputs, epoch: int) -> dict[str, torch.Tensor]:
        pairs = _pairs(students, teachers)
        teacher_logits = torch.stack([at_least_fp32(pairs[name][1]) for name in CENTERED_TERMS])  # [6, 2B, K]
        temps = self.temps[epoch].to(teacher_logits.dtype)  # [6]
        probs = F.softmax((teacher_logits - self.centers[:, None]) / temps[:, None, None], dim=-1)
        n_views, batch, k = self.n_views, teacher_logits.shape[1] // 2, teacher_logits.shape[2]
        probs = probs.view(len(CENTERED_TERMS), 2, batch, k)

        log_probs: dict[int, torch.Tensor] = {}  # id(student tensor) -> [V, B, K]
        view_sums: dict[int, torch.Tensor] = {}  # id(student tensor) -> [B, K], sum over all V views
        terms: dict[str, torch.Tensor] = {}
        n_pairs = 2 * n_views - 2
        for i, name in enumerate(CENTERED_TERMS):
            student = pairs[name][0]
            key = id(student)
            if key not in log_probs:
                log_probs[key] = F.log_softmax(at_least_fp32(student) / self.student_temp, dim=-1).view(n_views, batch, k)
                view_sums[key] = log_probs[key].sum(dim=0)
            # sum over teacher views t of <q_t, sum_{v != t} logp_v>, all samples at once
            cross = probs[i] * (view_sums[key].unsqueeze(0) - log_probs[key][:2])  # [2, B, K]
            terms[name] = -cross.sum() / (batch * n_pairs)

        search_temp = temps[CENTERED_TERMS.index("vit_self")]
        for name, student, teacher in _search_pairs(students, teachers):
            local_log_probs = log_probs[id(student)][2:].reshape(-1, k)  # [L*B, K], view-major
            target = F.softmax(at_least_fp32(teacher) / search_temp, dim=-1)
            terms[name] = -(target * local_log_probs).sum(dim=-1).mean()

        self._update_centers_fused(teacher_logits)
        return terms

    @torch.no_grad()
    def _update_centers_fused(self, teacher_logits: torch.Tensor) -> None:
        batch_sum, world = _all_reduce_sum(teacher_logits.sum(dim=1))  # [6, K]; one collective
        batch_center = batch_sum / (teacher_logits.shape[1] * world)
        self.centers.copy_(self.centers * self.center_momentum + batch_center * (1 - self.center_momentum))

    def _plain(self, students: StudentOutputs, teachers: TeacherOutputs, epoch: int) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for i, (name, (student, teacher)) in enumerate(_pairs(students, teachers).items()):
            temp = float(self.temp_schedules[name][epoch])
            student_views = (at_least_fp32(student) / self.student_temp).chunk(self.n_views)
            teacher_views = F.softmax((at_least_fp32(teacher) - self.centers[i]) / temp, dim=-1).chunk(2)
            total, n_terms = 0.0, 0
            for iq, q in enumerate(teacher_views):
                for v, s in enumerate(student_views):
                    if v == iq:
                        continue
                    total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                    n_terms += 1
            terms[name] = total / n_terms
        search_temp = float(self.search_temp_schedule[epoch])
        n_local_rows = students.cnn_query.shape[0]
        for name, student, teacher in _search_pairs(students, teachers):
            local = at_least_fp32(student[-n_local_rows:]) / self.student_temp
            target = F.softmax(at_least_fp32(teacher) / search_temp, dim=-1)
            terms[name] = torch.sum(-target * F.log_softmax(local, dim=-1), dim=-1).mean()
        with torch.no_grad():
            for i, (_, teacher) in enumerate(_pairs(students, teachers).values()):
                batch_sum, world = _all_reduce_sum(at_least_fp32(teacher).sum(dim=0))
                batch_center = batch_sum / (teacher.shape[0] * world)
                self.centers[i] = self.centers[i] * self.center_momentum + batch_center * (1 - self.center_momentum)
        return terms
