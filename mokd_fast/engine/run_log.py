"""What a run reports: log.jsonl lines, TensorBoard scalars, a tqdm bar, throughput and data wait."""

import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


class Throughput:
    """Wall time and time blocked waiting for the next batch, over a window and over the whole run.

    The data wait is host time spent in ``next(batches)``. On CUDA the host runs ahead of the device
    until a sync (the log line's), so a device-bound step shows up as step time, not as data wait.
    Time spent outside the steps (checkpoint writes, periodic k-NN) is left out of the windows, so
    a log line's samples/s is the training rate; the whole run's figures include it (wall clock).
    """

    def __init__(self) -> None:
        now = time.perf_counter()
        self.run_start = self.window_start = now
        self.run_wait = self.window_wait = 0.0
        self.run_steps = self.window_steps = 0
        self.run_outside = 0.0

    def waited(self, seconds: float) -> None:
        self.window_wait += seconds
        self.run_wait += seconds

    def stepped(self) -> None:
        self.window_steps += 1
        self.run_steps += 1

    def outside(self, seconds: float) -> None:
        """Time spent between steps on something else (a checkpoint write, an evaluation)."""
        self.window_start += seconds
        self.run_outside += seconds

    def window(self, samples_per_step: int) -> tuple[float, float]:
        """Samples/s and data-wait fraction since the previous call."""
        now = time.perf_counter()
        elapsed = max(now - self.window_start, 1e-9)
        rate, wait = self.window_steps * samples_per_step / elapsed, self.window_wait / elapsed
        self.window_start, self.window_wait, self.window_steps = now, 0.0, 0
        return rate, wait

    def run(self, samples_per_step: int) -> tuple[float, float, float]:
        """Elapsed seconds, samples/s and data-wait fraction of the whole run."""
        elapsed = max(time.perf_counter() - self.run_start, 1e-9)
        return elapsed, self.run_steps * samples_per_step / elapsed, self.run_wait / elapsed


class RunLog:
    """Rank 0's outputs; on other ranks every method does nothing.

    Resuming at step ``start_step`` drops the log lines a killed run wrote past it (those steps are
    computed again) and purges the TensorBoard events after it, so each step appears once.

    Args:
        output_dir: Run directory.
        start_step: Steps already done.
        total_steps: Steps the run will reach.
        enabled: Whether this is rank 0.
        tensorboard: Write TensorBoard events if the package is installed.
    """

    def __init__(self, output_dir: Path, start_step: int, total_steps: int, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        self.path = output_dir / "log.jsonl"
        self._truncate_after(start_step)
        self.file = self.path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(str(output_dir / "tb"), purge_step=start_step)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.1)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a killed process
            if record["step"] <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def stepped(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def _append(self, record: dict[str, Any]) -> None:
        """One log.jsonl line and the TensorBoard scalars of its float values."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, float):
                    self.writer.add_scalar(key, value, record["step"])

    def write(self, record: dict[str, Any]) -> None:
        """One log.jsonl line (and its TensorBoard scalars and bar summary)."""
        if not self.enabled:
            return
        self._append(record)
        totals = {f"L_{k.removeprefix('loss_')}": f"{v:.3f}" for k, v in record.items() if k.startswith("loss_")}
        spreads = [v for k, v in record.items() if k.endswith("_spread")]
        health = {"spread": f"{min(spreads):.2f}"} if spreads else {}  # the least spread monitor; 0 is collapsed
        self.bar.set_postfix(epoch=record["epoch"], **totals, **health, samples_s=f"{record['samples_per_s']:.1f}",
                             data_wait=f"{record['data_wait']:.0%}")

    def evaluated(self, record: dict[str, Any]) -> None:
        """An evaluation's log.jsonl line and TensorBoard scalars, announced above the bar."""
        if not self.enabled:
            return
        self._append(record)
        scores = ", ".join(f"{k.removeprefix('knn_')} {v:.2f}" for k, v in record.items() if k.startswith("knn_"))
        tqdm.write(f"k-NN after step {record['step']} (epoch {record['epoch']}): {scores}")

    def message(self, text: str) -> None:
        """A line of text that does not break the bar."""
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.file.close()
        if self.writer is not None:
            self.writer.close()
