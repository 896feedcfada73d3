"""A transcription of SEED's official loss path (jacobswan1/SEED @ f236cac), for parity tests.

Written from the specification of ``seed/builder.py`` (``forward``: normalised embeddings, positive
logits by einsum, negatives against the ``[D, K]`` queue, concatenation, division by the
temperatures) and ``tools/utils.py: soft_cross_entropy``: the official operations and layouts, not
our forms. Run it with autocast off, as the specification prescribes.
"""

import math

import torch
import torch.nn.functional as F


def official_logits(s: torch.Tensor, t: torch.Tensor, queue_dk: torch.Tensor, temp: float, dt: float):
    """``builder.SEED.forward`` after the encoders: (student logits, teacher logits); queue is ``[D, K]``."""
    s = F.normalize(s, dim=1)
    t = F.normalize(t, dim=1)
    l_pos = torch.einsum("nc,nc->n", [s, t]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [s, queue_dk.clone().detach()])
    logit_stu = torch.cat([l_pos, l_neg], dim=1) / temp
    t_pos = torch.einsum("nc,nc->n", [t, t]).unsqueeze(-1)
    t_neg = torch.einsum("nc,ck->nk", [t, queue_dk.clone().detach()])
    logit_tea = torch.cat([t_pos, t_neg], dim=1) / dt
    return logit_stu, logit_tea


def soft_cross_entropy(student_logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``tools/utils.py``: ``-(target * log_softmax(student_logit)).sum() / B``."""
    return -(target * F.log_softmax(student_logit, dim=1)).sum() / student_logit.shape[0]


def official_loss(s: torch.Tensor, t: torch.Tensor, queue_dk: torch.Tensor, temp: float = 0.2,
                  dt: float = 1e-4) -> torch.Tensor:
    """``main.py``'s loss: the soft cross-entropy towards the softmax of the teacher logits."""
    logit_stu, logit_tea = official_logits(s, t, queue_dk, temp, dt)
    return soft_cross_entropy(logit_stu, F.softmax(logit_tea, dim=1))


def official_lr(epoch: int, lr: float, lr_mult: float, epochs: int, warmup_epochs: int = 5) -> float:
    """``tools/utils.py: adjust_learning_rate`` with ``--cos`` (always on: a ``type=bool`` flag)."""
    if epoch < warmup_epochs:
        return lr + (lr * lr_mult - lr) / warmup_epochs * epoch
    return lr * lr_mult * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


class OfficialSEED:
    """``seed/small_patch_builder.py`` (``builder.py`` without patches) around given student and teacher callables.

    Queues are ``[D, K]`` with one shared pointer; every step enqueues the teacher's global embeddings
    and patch 0 of each image's small-patch embeddings, after the logits, asserting ``K % B == 0``.
    """

    def __init__(self, student, teacher, queue_dk: torch.Tensor, small_queue_dk: torch.Tensor | None = None,
                 t: float = 0.2, temp: float = 1e-4) -> None:
        self.student, self.teacher = student, teacher
        self.queue, self.small_queue = queue_dk.clone(), None if small_queue_dk is None else small_queue_dk.clone()
        self.ptr, self.t, self.temp = 0, t, temp

    def _enqueue(self, keys: torch.Tensor, small_keys: torch.Tensor | None) -> None:
        batch_size = keys.shape[0]
        assert self.queue.shape[1] % batch_size == 0
        self.queue[:, self.ptr:self.ptr + batch_size] = keys.transpose(0, 1)
        if small_keys is not None:
            self.small_queue[:, self.ptr:self.ptr + batch_size] = small_keys.transpose(0, 1)
        self.ptr = (self.ptr + batch_size) % self.queue.shape[1]

    def loss(self, image: torch.Tensor, small_image: torch.Tensor | None = None) -> torch.Tensor:
        """``main*.py``'s loss of one step: CE(global) (+ CE(small)), then the enqueue.

        ``small_image``: ``[B, N, 3, h, w]`` (the official sample-major layout) or None.
        """
        s = F.normalize(self.student(image), dim=1)
        with torch.no_grad():
            t = F.normalize(self.teacher(image), dim=1)
        loss = official_loss(s, t, self.queue, self.t, self.temp)
        small_keys = None
        if small_image is not None:
            b, n, c, h, w = small_image.shape
            flat = small_image.reshape(-1, c, h, w)
            s_small = F.normalize(self.student(flat), dim=-1)
            with torch.no_grad():
                t_small = F.normalize(self.teacher(flat), dim=1)
            loss = loss + official_loss(s_small, t_small, self.small_queue, self.t, self.temp)
            small_keys = t_small.view(b, n, -1)[:, 0].contiguous()
        self._enqueue(t, small_keys)
        return loss
