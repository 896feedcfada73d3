"""SEED as an engine method: a frozen teacher, a student with an MLP head, and queues of teacher embeddings."""

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mokd_fast.core.regions import region
from mokd_fast.methods.base import Losses, Method, OptimizerSpec, StepInfo
from mokd_fast.methods.common.checkpoint import cpu_state, without
from mokd_fast.methods.common.monitors import embedding_spread
from mokd_fast.methods.common.queue import EmbeddingQueue, gather_rows
from mokd_fast.methods.common.schedules import batch_scaled_lr, epoch_cosine_schedule
from mokd_fast.methods.common.sgd import sgd_over
from mokd_fast.methods.seed.config import SEEDConfig, SEEDTrainConfig
from mokd_fast.methods.seed.losses import seed_loss
from mokd_fast.methods.seed.student import Student
from mokd_fast.methods.seed.teacher_load import load_teacher
from mokd_fast.methods.seed.views import seed_policy
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy


class SEED(Method):
    """SEED (ICLR 2021): the student matches the teacher's similarity distribution over [own teacher embedding | queue].

    Student and teacher see the same view; the teacher's embeddings of the global view are enqueued
    after the step (all ranks', in rank order), and with small patches the teacher's embeddings of
    each image's first patch go into a second queue that shares the pointer, as official.

    Args:
        cfg: Teacher, student, loss and views; see ``SEEDConfig``.
        train: The training recipe; the official defaults when omitted.
    """

    name = "seed"
    configs = (SEEDConfig, SEEDTrainConfig)
    official_cuda_precision = "fp16"  # the official SEED code turns AMP on unconditionally
    added_settings: ClassVar[dict[str, Any]] = {"head_bn": False, "optimizer": "sgd"}  # before 2026-12-05: no head BN, SGD only
    parts_module = "mokd_fast.methods.seed.parts"

    @classmethod
    def benchmark_settings(cls, bench: dict[str, Any]) -> dict[str, Any]:
        """The student, the teacher (a file, or a random MoCo-v2 ``teacher_arch``), the view sizes and patches."""
        teacher = {"teacher": bench["teacher"]} if bench["teacher"] else {"teacher_format": "moco"}
        return {**teacher, "teacher_arch": bench["teacher_arch"], "student_arch": bench["student_arch"],
                "global_size": bench["global_size"], "local_crops_number": bench["patches"],
                "local_size": bench["local_size"]}

    def __init__(self, cfg: SEEDConfig, train: SEEDTrainConfig | None = None) -> None:
        train = train if train is not None else SEEDTrainConfig()
        super().__init__(cfg, train)
        self.teacher = load_teacher(cfg, seed=train.seed, trust=train.trust_checkpoint)
        self.teacher_digest = self.teacher.digest()
        self.student = Student(cfg.student_arch, self.teacher.dim, cfg.student_hidden, cfg.head_bn)
        self.queue = EmbeddingQueue(cfg.queue_size, self.teacher.dim, seed=train.seed)
        self.small_queue = (EmbeddingQueue(cfg.queue_size, self.teacher.dim, seed=train.seed + 1)
                            if cfg.local_crops_number else None)
        self._pending: torch.Tensor | None = None  # [B, D] or [B, 2D]: this step's teacher embeddings to enqueue

    @classmethod
    def make_policy(cls, cfg: SEEDConfig, train: SEEDTrainConfig) -> MultiCropPolicy:
        return seed_policy(cfg.views, cfg.global_size, cfg.global_crops_scale, cfg.local_crops_number,
                           cfg.local_size, cfg.local_crops_scale)

    def trainable(self) -> nn.Module:
        return self.student

    def compile_regions(self) -> None:
        """The student (one static-shape graph per resolution group) and the teacher's forward."""
        self.student.compile(dynamic=False)
        self.teacher.compile(dynamic=False)

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        """One SGD over every student parameter, weight decay included on biases and norms (official)."""
        return sgd_over("student", self.student, self.train_cfg, fused)

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        """The official per-epoch warm-up from ``lr`` to ``lr x global batch / 256``, then a per-epoch cosine."""
        t = self.train_cfg
        peak = batch_scaled_lr(t.lr, t.batch_size_per_gpu * world_size, t.scale_lr)
        return {"lr": epoch_cosine_schedule(t.lr, peak, self.epochs, iters_per_epoch, t.warmup_epochs)}

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        self.check_batch(batch)
        n_local = self.cfg.local_crops_number
        groups = [batch.global_crops] + ([batch.local_crops] if n_local else [])  # [B | L*B, 3, H, W] each
        with region("student"):
            embeddings = self.run_trainable()(groups)  # [B, D], [L*B, D]
        with region("teacher"):
            targets = [self.teacher(x) for x in groups]  # fp32 [B, D], [L*B, D]; no graph
        cfg = self.cfg
        with region("losses"):
            terms = {"seed": seed_loss(embeddings[0], targets[0], self.queue.queue, cfg.student_temp,
                                       cfg.teacher_temp)}
            total = terms["seed"]
            if n_local:
                terms["seed_small"] = seed_loss(embeddings[1], targets[1], self.small_queue.queue, cfg.student_temp,
                                                cfg.teacher_temp)
                total = total + cfg.local_weight * terms["seed_small"]
        # Patch 0 of every image is local_crops[:B] (view-major), the official small queue's entries.
        with torch.no_grad():  # collapse monitors: the spread of the student's and the teacher's embeddings
            terms |= {"student_spread": embedding_spread(embeddings[0]), "teacher_spread": embedding_spread(targets[0])}
        keys = [targets[0]] + ([targets[1][:batch.batch_size]] if n_local else [])
        self._pending = torch.cat([F.normalize(k, dim=1) for k in keys], dim=1)  # [B, D] or [B, 2D]
        return Losses(terms, {"student": total})

    @torch.no_grad()
    def after_step(self, info: StepInfo) -> None:
        """Enqueues this step's teacher embeddings of every rank (one all-gather for both queues)."""
        if self._pending is None:
            return
        rows = gather_rows(self._pending)  # [W * B, D or 2D], rank order
        self._pending = None
        dim = self.teacher.dim
        self.queue.enqueue(rows[:, :dim], gathered=True)
        if self.small_queue is not None:
            self.small_queue.enqueue(rows[:, dim:], gathered=True)

    def collapse_advice(self) -> dict[str, str]:
        """The base advice plus the student head that learned on the shapes (docs/learning-health.md)."""
        return {"spread": super().collapse_advice()["spread"] + " A student spread near 0 from the start: "
                          "--head_bn true (BatchNorm in the student head) took it from 0.002 to 0.83 in 150 steps."}

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        return {"student": (self.student.backbone, self.student.kind)}

    def describe(self) -> str:
        n_student = sum(p.numel() for p in self.student.parameters()) / 1e6
        n_teacher = sum(p.numel() for p in self.teacher.parameters()) / 1e6
        small = f" + small queue ({self.cfg.local_crops_number} patches)" if self.small_queue is not None else ""
        return (f"SEED teacher {self.teacher.source} ({n_teacher:.1f}M, frozen) -> student {self.cfg.student_arch} "
                f"+ MLP ({n_student:.1f}M); queue {self.cfg.queue_size} x {self.teacher.dim}{small}; "
                f"views {self.cfg.views}")

    def checkpoint_state(self) -> dict[str, Any]:
        """``student`` (backbone and head, the key the evaluation tools read), ``arch_student``, the queues with
        their pointers, and the teacher's source and digest (its weights stay in their own file)."""
        queues = {"queue": self.queue.state_dict()}
        if self.small_queue is not None:
            queues["small_queue"] = self.small_queue.state_dict()
        return {
            "student": cpu_state(self.student),
            "arch_student": self.cfg.student_arch,
            "seed_queues": {name: cpu_state(q) for name, q in queues.items()},
            "seed_teacher": {"source": self.teacher.source, "digest": self.teacher_digest, "dim": self.teacher.dim},
        }

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        if "student" not in ckpt or "seed_queues" not in ckpt:
            raise ValueError(f"no 'student'/'seed_queues' entries: not a SEED checkpoint (keys: {sorted(ckpt)[:8]})")
        saved = ckpt.get("arch_student")
        if saved is not None and saved != self.cfg.student_arch:
            raise ValueError(f"the student was trained as {saved!r} but --student_arch is {self.cfg.student_arch!r}")
        teacher = ckpt.get("seed_teacher", {})
        if teacher.get("digest") not in (None, self.teacher_digest):
            raise ValueError(f"the run was trained with teacher {teacher.get('source')!r}, whose weights differ from "
                             f"--teacher's ({self.teacher.source}); resume with the same teacher")
        queues = ckpt["seed_queues"]
        if (self.small_queue is not None) != ("small_queue" in queues):
            raise ValueError("the checkpoint's small-patch queue does not match --local_crops_number "
                             f"{self.cfg.local_crops_number}; resume with the run's setting")
        try:
            self.student.load_state_dict(ckpt["student"])
            self.queue.load_state_dict(queues["queue"])
            if self.small_queue is not None:
                self.small_queue.load_state_dict(queues["small_queue"])
        except RuntimeError as err:
            raise ValueError(f"the SEED checkpoint does not fit this student or queue: {err}") from err
        return without(ckpt, ("student", "arch_student", "seed_queues", "seed_teacher"))
