"""The step's speed switches, resolved for the device: what every layer that builds or times a step reads."""

from dataclasses import dataclass

import torch

from mokd_fast.core.run_config import RunConfig


@dataclass(frozen=True)
class StepSwitches:
    """The step's speed switches as resolved for the device (``auto`` settled).

    Attributes:
        precision: "fp32", "fp16" (a GradScaler per optimiser) or "bf16".
        compile: The method's ``compile_regions`` (MOKD: each branch's student and teacher forward).
        channels_last: The method's ``channels_last`` (convolution weights) and every input crop.
        fused_optim: Fused Adam/AdamW (foreach SGD on CPU, fused on CUDA); off: per-parameter loops.
        ddp_static_graph: DDP ``static_graph`` (the same parameters get gradients every step).
        ddp_bucket_view: DDP ``gradient_as_bucket_view`` (gradients live in the all-reduce buckets).
    """

    precision: str
    compile: bool
    channels_last: bool
    fused_optim: bool
    ddp_static_graph: bool
    ddp_bucket_view: bool

    @classmethod
    def resolve(cls, cfg: RunConfig, device: torch.device) -> "StepSwitches":
        """``auto`` values for ``device``: bf16, compile and channels-last on CUDA; fp32 and eager on CPU."""
        cuda = device.type == "cuda"
        precision = cfg.resolved_precision
        return cls(
            precision=("bf16" if cuda else "fp32") if precision == "auto" else precision,
            compile=cuda if cfg.compile is None else cfg.compile,
            channels_last=cuda if cfg.channels_last is None else cfg.channels_last,
            fused_optim=cfg.fused_optim,
            ddp_static_graph=cfg.ddp_static_graph,
            ddp_bucket_view=cfg.ddp_bucket_view,
        )
