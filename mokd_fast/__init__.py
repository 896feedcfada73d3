"""mokd-fast: high-throughput MOKD self-supervised pre-training of a CNN and a ViT together."""

from mokd_fast.config import MOKDConfig
from mokd_fast.losses import LOSS_TERMS
from mokd_fast.mokd import MOKD

__all__ = ["LOSS_TERMS", "MOKD", "MOKDConfig"]
