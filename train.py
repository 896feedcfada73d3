#!/usr/bin/env python
"""MOKD pre-training. Single process: ``python train.py ...``; DDP: ``torchrun --nproc_per_node=N train.py ...``.

Flags follow the official ``main_mokd.py``; ``python train.py --help`` lists them all.
"""

import sys

from mokd_fast.cli import parse_config
from mokd_fast.distributed import shutdown
from mokd_fast.errors import NonFiniteLoss, UsageError


def main(argv: list[str] | None = None) -> int:
    """Runs training; returns the exit status (2: bad usage or input, 1: training diverged)."""
    try:
        method, cfg = parse_config(argv)
        from mokd_fast.engine import Trainer  # after parsing, so --help and flag errors are instant

        Trainer(method, cfg).fit()
    except UsageError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        print(f"train.py: {err}", file=sys.stderr)
        return 1
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
