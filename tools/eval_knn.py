#!/usr/bin/env python
"""k-NN evaluation of a pre-trained backbone: ``python tools/eval_knn.py --pretrained_weights CKPT --data_path DATA``.

``--help`` lists every flag; docs/evaluation.md shows a run. Under ``torchrun`` every
process extracts its part of the features.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.eval.cli import knn_main as main

if __name__ == "__main__":
    sys.exit(main())
