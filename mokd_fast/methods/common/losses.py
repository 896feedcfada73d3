"""Loss pieces several methods share."""

import torch
import torch.nn.functional as F


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, batch mean; no gradient to ``teacher``."""
    log_p = F.log_softmax(student / temperature, dim=1)
    target = F.softmax(teacher.detach() / temperature, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean") * temperature ** 2
