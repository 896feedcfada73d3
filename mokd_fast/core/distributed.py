"""Process-group set-up: one process without a launcher, or ``torchrun`` on one or many nodes."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mokd_fast.core.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(flag: str, local_rank: int) -> torch.device:
    if flag == "cpu":
        return torch.device("cpu")
    if flag == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is visible; use --device cpu or auto")
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                "launch at most one process per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_flag: str, dist_url: str = "env://") -> DistContext:
    """Joins the process group that ``torchrun`` describes in the environment, if any.

    NCCL on CUDA, gloo on CPU. Without ``WORLD_SIZE`` (or with 1) the run is a single process and no
    process group is created.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(device_flag, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            init_method=dist_url,
            world_size=world_size,
            rank=rank,
            timeout=timedelta(minutes=30),
            device_id=device if device.type == "cuda" else None,
        )
    return DistContext(rank, world_size, local_rank, device)


def shutdown() -> None:
    """Leaves the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def check_on_main(ctx: DistContext, check: Callable[[], None]) -> None:
    """Runs ``check`` on rank 0 and raises its ``UsageError`` on every rank.

    Output-directory checks only make sense where the files are written; failing on rank 0 alone
    would leave the other ranks waiting at their next collective until the timeout.
    """
    message = None
    if ctx.is_main:
        try:
            check()
        except UsageError as err:
            message = str(err)
    if ctx.distributed:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise UsageError(message)


def gather_objects(ctx: DistContext, obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (for per-rank RNG states in checkpoints)."""
    if not ctx.distributed:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
