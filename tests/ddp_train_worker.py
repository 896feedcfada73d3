"""Run under torchrun by tests/test_trainer_ddp.py: trains like train.py, then dumps this rank's state."""

import sys
from pathlib import Path

import torch

from mokd_fast.cli import parse_config
from mokd_fast.distributed import shutdown
from mokd_fast.engine import Trainer

if __name__ == "__main__":
    method, cfg = parse_config(sys.argv[1:])
    trainer = Trainer(method, cfg)
    trainer.fit()
    torch.save(
        {
            "teachers": trainer.model.teachers.state_dict(),
            "students": trainer.model.students.state_dict(),
            "batches_per_epoch": len(trainer.pipeline),
            "steps": trainer.meter.run_steps,
        },
        Path(cfg.output_dir) / f"rank{trainer.ctx.rank}.pt",
    )
    shutdown()
