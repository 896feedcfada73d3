"""mokd-fast: high-throughput MOKD self-supervised pre-training of a CNN and a ViT together.

The names below are imported on first use, so that importing the package (as ``train.py --help``
and ``tools/convert_dataset.py`` do) loads neither torch nor timm.
"""

import importlib
from typing import Any

_LAZY = {"LOSS_TERMS": "mokd_fast.methods.mokd.losses", "MOKD": "mokd_fast.methods.mokd.method", "MOKDConfig": "mokd_fast.methods.mokd.config"}

__all__ = ["LOSS_TERMS", "MOKD", "MOKDConfig"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mokd_fast' has no attribute {name!r}")
