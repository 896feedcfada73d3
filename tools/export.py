#!/usr/bin/env python
"""Export a backbone: ``python tools/export.py CKPT OUT --key teacher_cnn --format timm|torchvision|official``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.eval.cli import export_main as main

if __name__ == "__main__":
    sys.exit(main())
