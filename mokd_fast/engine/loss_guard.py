"""Sync-free recording of the loss terms, checked for NaN/inf only where the host syncs anyway."""

import torch
import torch.distributed as dist

from mokd_fast.core.distributed import DistContext
from mokd_fast.core.errors import NonFiniteLoss


class LossGuard:
    """Keeps each step's losses on the device; ``check`` averages them over ranks and validates.

    The names are the step's (a method's terms and ``loss_<optimiser>`` totals, in its order), fixed
    by the first step recorded. A step only appends a ``[n_losses]`` tensor (no host sync). ``check`` runs at log lines and before
    every checkpoint: one all-reduce and one device-to-host copy (the sync point). A NaN or inf on
    any rank reaches every rank through the sum, so all ranks stop together, and no checkpoint is
    written after the bad step.
    """

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.pending: list[tuple[int, int, torch.Tensor]] = []
        self.checked: list[torch.Tensor] = []
        self.names: tuple[str, ...] = ()

    def record(self, step: int, epoch: int, losses: dict[str, torch.Tensor]) -> None:
        """Keeps this step's losses (``step`` counts from 0)."""
        if not self.names:
            self.names = tuple(losses)
        self.pending.append((step, epoch, torch.stack([losses[n].detach().float() for n in self.names])))

    def check(self, last_good: str) -> None:
        """Raises ``NonFiniteLoss`` naming the first bad term and step since the previous check.

        Args:
            last_good: Where the last checkpoint written before this check is, for the message.
        """
        if not self.pending:
            return
        values = torch.stack([v for _, _, v in self.pending])  # [steps, n_losses]
        if self.ctx.distributed:
            dist.all_reduce(values)
            values /= self.ctx.world_size
        values = values.cpu()  # sync point
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            row, col = bad[0].tolist()
            step, epoch, _ = self.pending[row]
            raise NonFiniteLoss(
                f"loss term {self.names[col]} is {values[row, col].item()} at step {step} (epoch {epoch}); "
                f"training stopped. {last_good}. Lower the learning rates (--lr*), clip gradients "
                "(--clip_grad* where the method has them) or use --precision fp32, then --resume from it."
            )
        self.checked.append(values)
        self.pending.clear()

    def window_means(self, last_good: str) -> dict[str, float]:
        """Mean of every loss over the steps since the previous call (and over ranks)."""
        self.check(last_good)
        values = torch.cat(self.checked).mean(0)
        self.checked.clear()
        return dict(zip(self.names, values.tolist()))
