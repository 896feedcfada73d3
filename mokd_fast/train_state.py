"""Training checkpoints of any method: its entries plus what an exact resume needs, written atomically.

A checkpoint holds the method's entries (``Method.checkpoint_state``: MOKD's official layout of four
models, architectures and six centers; ``model`` for other methods), ``optimizer_<name>`` and, with
fp16, ``fp16_scaler_<name>`` per optimiser (MOKD's ``cnn``/``vit`` give the official keys), ``epoch``
and ``mokd_fast``: the global step, the data position (epoch and batch within it), the iterations per
epoch the schedules were built for, every rank's RNG states and the resolved config (with the
method's name). ``epoch`` keeps the official meaning: the epoch a resumed run starts in.
"""

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.amp import GradScaler

from mokd_fast.errors import UsageError
from mokd_fast.methods.base import Method

FORMAT_VERSION = 1
# Settings that may change between a run and its resumption without changing what it computes.
RESUME_FREE_SETTINGS = frozenset({
    "output_dir", "data_path", "num_workers", "max_steps", "log_every", "ckpt_every_steps", "saveckp_freq",
    "resume", "device", "tensorboard", "dist_url", "pipeline", "crop_resampler", "fused_loss", "fused_ema",
    "single_backward", "fused_clip",
    "compile", "channels_last", "fused_optim", "ddp_static_graph", "ddp_bucket_view",
    "knn_every", "knn_data", "knn_k", "knn_input_size",
    "collapse_window", "stop_on_collapse",
    "teacher",  # SEED's teacher file may move; the checkpoint's digest of its weights checks it is the same teacher
})


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch CPU and, on CUDA, the device's)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Puts back what ``capture_rng`` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def atomic_save(obj: Any, path: Path) -> None:
    """Writes ``obj`` so that ``path`` is either the old file or the complete new one, never a torn one.

    Temp file in the same directory, fsync, rename over the target, fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def build_checkpoint(
    model: Method,
    optimizers: dict[str, torch.optim.Optimizer],
    scalers: dict[str, GradScaler] | None,
    step: int,
    iters_per_epoch: int,
    rng_states: list[dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint dict after ``step`` completed steps."""
    epoch, batch = divmod(step, iters_per_epoch)
    ckpt = model.checkpoint_state()
    ckpt["epoch"] = epoch
    ckpt.update({f"optimizer_{name}": opt.state_dict() for name, opt in optimizers.items()})
    if scalers is not None:
        ckpt.update({f"fp16_scaler_{name}": scaler.state_dict() for name, scaler in scalers.items()})
    ckpt["mokd_fast"] = {
        "version": FORMAT_VERSION,
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch,
        "iters_per_epoch": iters_per_epoch,
        "rng": rng_states,
        "config": config,
    }
    return ckpt


def check_resumable(ours: dict[str, Any], path: Path, config: dict[str, Any], iters_per_epoch: int) -> None:
    """Refuses a resume whose settings would change what the remaining steps compute.

    Raises:
        UsageError: Names each differing setting, or the differing iterations per epoch.
    """
    saved = {"method": "mokd", **ours["config"]}  # written before there were other methods
    differ = sorted(k for k in config.keys() | saved.keys()
                    if k not in RESUME_FREE_SETTINGS and config.get(k) != saved.get(k))
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}" for k in differ)
        raise UsageError(f"--resume {path}: settings differ from the run that wrote it ({details}); "
                         "resume with the same settings or start a new --output_dir")
    if ours["iters_per_epoch"] != iters_per_epoch:
        raise UsageError(
            f"--resume {path}: it was written with {ours['iters_per_epoch']} steps per epoch, this run has "
            f"{iters_per_epoch} (dataset size, batch size or number of processes changed); the schedules "
            "would not line up"
        )


def load_checkpoint(
    path: Path,
    model: Method,
    optimizers: dict[str, torch.optim.Optimizer],
    scalers: dict[str, GradScaler] | None,
    config: dict[str, Any],
    iters_per_epoch: int,
) -> tuple[int, list[dict[str, Any]] | None]:
    """Loads a checkpoint for resuming.

    Ours resume at the exact step with every rank's RNG; an official ``main_mokd.py`` checkpoint
    resumes at the start of its ``epoch`` with fresh RNG states.

    Returns:
        The number of completed steps, and the saved per-rank RNG states (None for official ones).

    Raises:
        UsageError: Missing file, incompatible settings, or state that does not fit this model.
    """
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such file")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ours = ckpt.get("mokd_fast")
    if ours is not None:
        check_resumable(ours, path, config, iters_per_epoch)
    try:
        rest = model.load_checkpoint_state(ckpt)
        for name, opt in optimizers.items():
            if f"optimizer_{name}" in rest:
                opt.load_state_dict(rest[f"optimizer_{name}"])
    except ValueError as err:
        raise UsageError(f"--resume {path}: {err}") from err
    for name, scaler in (scalers or {}).items():
        if f"fp16_scaler_{name}" in rest:
            scaler.load_state_dict(rest[f"fp16_scaler_{name}"])
    if ours is None:
        return int(rest.get("epoch", 0)) * iters_per_epoch, None
    return int(ours["step"]), ours["rng"]
