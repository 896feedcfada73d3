#!/usr/bin/env python
"""Top-1/top-5 of every network and stage of an L-MCL checkpoint: ``python tools/eval_classifiers.py --checkpoint CKPT --data_path VAL``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.eval.cli import classifiers_main as main

if __name__ == "__main__":
    sys.exit(main())
