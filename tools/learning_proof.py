#!/usr/bin/env python
"""Proof that pre-training learns: ``python tools/learning_proof.py --method mokd --out DIR [--device cuda]``.

``--help`` lists every flag; docs/learning-health.md shows a run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.bench.learning_proof import main

if __name__ == "__main__":
    sys.exit(main())
