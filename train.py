#!/usr/bin/env python
"""MOKD pre-training. Single process: ``python train.py ...``; DDP: ``torchrun --nproc_per_node=N train.py ...``.

Flags follow the official ``main_mokd.py``; ``python train.py --help`` lists them all.
"""

import sys

from mokd_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
