"""The one precision rule every loss follows under autocast."""

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32 so softmaxes, logits at small temperatures and sums never run in half precision;
    fp32 and fp64 are kept (the fp64 parity tests rely on it)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
