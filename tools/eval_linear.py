#!/usr/bin/env python
"""Linear probe of a pre-trained backbone: ``python tools/eval_linear.py --pretrained_weights CKPT --data_path DATA``.

``--help`` lists every flag; docs/evaluation.md shows a run. Launch with ``torchrun``
for several processes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.eval.cli import linear_main as main

if __name__ == "__main__":
    sys.exit(main())
