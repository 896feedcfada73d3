#!/usr/bin/env python
"""Convert an ImageFolder to FFCV or DALI format: ``python tools/convert_dataset.py SRC OUT --format ffcv|dali``.

``--help`` lists every flag; docs/conversion.md shows a run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
