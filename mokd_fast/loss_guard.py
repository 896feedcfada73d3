"""Sync-free recording of the loss terms, checked for NaN/inf only where the host syncs anyway."""

import torch
import torch.distributed as dist

from mokd_fast.distributed import DistContext
from mokd_fast.errors import NonFiniteLoss
from mokd_fast.losses import LOSS_TERMS

LOGGED_LOSSES = (*LOSS_TERMS, "loss_cnn", "loss_vit")


class LossGuard:
    """Keeps each step's ten losses on the device; ``check`` averages them over ranks and validates.

    A step only appends a ``[10]`` tensor (no host sync). ``check`` runs at log lines and before
    every checkpoint: one all-reduce and one device-to-host copy (the sync point). A NaN or inf on
    any rank reaches every rank through the sum, so all ranks stop together, and no checkpoint is
    written after the bad step.
    """

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.pending: list[tuple[int, int, torch.Tensor]] = []
        self.checked: list[torch.Tensor] = []

    def record(self, step: int, epoch: int, losses: dict[str, torch.Tensor]) -> None:
        """Keeps this step's losses (``step`` counts from 0)."""
        self.pending.append((step, epoch, torch.stack([losses[n].detach().float() for n in LOGGED_LOSSES])))

    def check(self, last_good: str) -> None:
        """Raises ``NonFiniteLoss`` naming the first bad term and step since the previous check.

        Args:
            last_good: Where the last checkpoint written before this check is, for the message.
        """
        if not self.pending:
            return
        values = torch.stack([v for _, _, v in self.pending])  # [steps, 10]
        if self.ctx.distributed:
            dist.all_reduce(values)
            values /= self.ctx.world_size
        values = values.cpu()  # sync point
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            row, col = bad[0].tolist()
            step, epoch, _ = self.pending[row]
            raise NonFiniteLoss(
                f"loss term {LOGGED_LOSSES[col]} is {values[row, col].item()} at step {step} (epoch {epoch}); "
                f"training stopped. {last_good}. Lower --lr_cnn/--lr_vit, clip gradients "
                "(--clip_grad_cnn/--clip_grad_vit) or use --precision fp32, then --resume from it."
            )
        self.checked.append(values)
        self.pending.clear()

    def window_means(self, last_good: str) -> dict[str, float]:
        """Mean of every loss over the steps since the previous call (and over ranks)."""
        self.check(last_good)
        values = torch.cat(self.checked).mean(0)
        self.checked.clear()
        return dict(zip(LOGGED_LOSSES, values.tolist()))
