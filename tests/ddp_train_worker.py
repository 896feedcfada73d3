"""Run under torchrun by tests/test_trainer_ddp.py: trains like train.py, then dumps this rank's state."""

import sys
from pathlib import Path

import torch

from mokd_fast.cli import parse_config
from mokd_fast.core.distributed import shutdown
from mokd_fast.engine.trainer import Trainer

if __name__ == "__main__":
    method, cfg = parse_config(sys.argv[1:])
    trainer = Trainer(method, cfg)
    trainer.fit()
    state = {"model": trainer.model.state_dict(), "batches_per_epoch": len(trainer.pipeline),
             "steps": trainer.meter.run_steps}
    for part in ("teachers", "students"):  # MOKD's two halves
        if hasattr(trainer.model, part):
            state[part] = getattr(trainer.model, part).state_dict()
    torch.save(state, Path(cfg.output_dir) / f"rank{trainer.ctx.rank}.pt")
    shutdown()
