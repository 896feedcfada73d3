"""A transcription of SEED's official loss path (jacobswan1/SEED @ f236cac), for parity tests.

Written from the specification of ``seed/builder.py`` (``forward``: normalised embeddings, positive
logits by einsum, negatives against the ``[D, K]`` queue, concatenation, division by the
temperatures) and ``tools/utils.py: soft_cross_entropy``: the official operations and layouts, not
our forms. Run it with autocast off, as the specification prescribes.
"""

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
