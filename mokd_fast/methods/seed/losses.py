"""SEED's loss, as the official code computes it (jacobswan1/SEED @ f236cac, ``seed/builder.py`` and
``tools/utils.py: soft_cross_entropy``), in fp32 whatever autocast is active.

The student's embedding of an image is compared with the teacher's embedding of the same image
(the positive) and with a queue of earlier teacher embeddings; so is the teacher's own. The
teacher's similarities at temperature 1e-4 give a target that is one-hot on the positive except
for queue entries within about 1e-3 in cosine of it, and the loss is the cross-entropy of the
student's distribution towards that target, averaged over the batch. Both similarity rows are
computed in fp32: in bf16, cosines of 0.999 and 0.9995 both round to 1.0 and tie with the positive,
which turns the nearly one-hot target into a uniform one (the specification measured 1/3 each).
"""

import torch
import torch.nn.functional as F

from mokd_fast.core.precision import at_least_fp32


def similarity_logits(x: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[B, 1 + K]``: each row's cosine with its positive, then with every queue entry, over the temperature.

    Args:
        x: ``[B, D]`` L2-normalised embeddings.
        positive: ``[B, D]`` L2-normalised positives (the teacher's embeddings of the same images).
        queue: ``[K, D]`` L2-normalised teacher embeddings of earlier batches.
        temperature: Divides the cosines.
    """
    pos = (x * positive).sum(dim=1, keepdim=True)  # [B, 1]
    return torch.cat([pos, x @ queue.T], dim=1) / temperature  # [B, 1 + K]


def seed_loss(student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor, student_temp: float = 0.2,
              teacher_temp: float = 1e-4) -> torch.Tensor:
    """SEED's soft cross-entropy of the student's similarity distribution towards the teacher's; a scalar.

    Args:
        student: ``[B, D]`` student embeddings (normalised here, as the official builder does).
        teacher: ``[B, D]`` teacher embeddings of the same images (normalised here; no gradient flows).
        queue: ``[K, D]`` earlier teacher embeddings, already normalised (the queue stores them so).
        student_temp: The student's temperature (official ``--temp`` 0.2).
        teacher_temp: The teacher's temperature (official ``--distill-t`` 1e-4).

    Returns:
        ``-sum(p_teacher * log_softmax(student_logits)) / B``, in fp32 (fp64 for fp64 inputs).
    """
    with torch.autocast(student.device.type, enabled=False):
        s = F.normalize(at_least_fp32(student), dim=1)
        t = F.normalize(at_least_fp32(teacher.detach()), dim=1)
        q = at_least_fp32(queue.detach())
        target = similarity_logits(t, t, q, teacher_temp).softmax(dim=1)  # [B, 1 + K]
        log_p = similarity_logits(s, t, q, student_temp).log_softmax(dim=1)
        return -(target * log_p).sum() / s.shape[0]
