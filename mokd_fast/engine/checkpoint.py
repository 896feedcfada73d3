"""Training checkpoints of any method: its entries plus what an exact resume needs, written atomically.

A checkpoint holds the method's entries (``Method.checkpoint_state``: MOKD's official layout of four
models, architectures and six centers; ``model`` for other methods), ``optimizer_<name>`` and, with
fp16, ``fp16_scaler_<name>`` per optimiser (MOKD's ``cnn``/``vit`` give the official keys), ``epoch``
and ``mokd_fast``: the global step, the data position (epoch and batch within it), the iterations per
epoch the schedules were built for, every rank's RNG states and the resolved config (with the
method's name). ``epoch`` keeps the official meaning: the epoch a resumed run starts in.
"""

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.amp import GradScaler

from mokd_fast.core.checkpoint_io import (
    IncompleteFile,
    describe_contents,
    is_complete,
    load_file,
)
from mokd_fast.core.errors import UsageError
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
    "trust_checkpoint",
    "teacher",  # SEED's teacher file may move; the checkpoint's digest of its weights checks it is the same teacher
})


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch CPU and, on CUDA, the device's), as plain data.

    NumPy's state is kept as a tuple of Python values (its 624 key words as a list), so that the
    checkpoint opens with ``torch.load``'s weights-only default.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Puts back what ``capture_rng`` saved (older checkpoints hold NumPy's key as an array: same values)."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def build_checkpoint(
    model: Method,
    optimizers: dict[str, torch.optim.Optimizer],
    scalers: dict[str, GradScaler] | None,
    step: int,
    iters_per_epoch: int,
    rng_states: list[dict[str, Any]],
    config: dict[str, Any],
    data_steps: int | None = None,
) -> dict[str, Any]:
    """The checkpoint dict after ``step`` completed steps.

    Args:
        iters_per_epoch: Steps in a schedule epoch.
        data_steps: Steps in one pass over the data (default ``iters_per_epoch``: they differ only
            under ``--epoch_length``).
    """
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
        "data_steps": data_steps or iters_per_epoch,
        "rng": rng_states,
        "config": config,
    }
    return ckpt


def check_settings(ours: dict[str, Any], path: Path, config: dict[str, Any],
                   added: dict[str, Any] | None = None) -> None:
    """Refuses a resume whose method or settings would change what the remaining steps compute.

    Args:
        added: Settings the method gained after it first wrote checkpoints, with the value its older
            code behaved as (``Method.added_settings``): a file without them is read as having those.

    Raises:
        UsageError: Names the other method, or each differing setting.
    """
    saved = {"method": "mokd", **ours["config"]}  # written before there were other methods
    if saved["method"] == config.get("method"):
        saved = {**(added or {}), **saved}
    if saved["method"] != config.get("method"):
        raise UsageError(f"--resume {path} is a checkpoint of --method {saved['method']}, this run is --method "
                         f"{config.get('method')}; resume it with --method {saved['method']} or start a new --output_dir")
    differ = sorted(k for k in config.keys() | saved.keys()
                    if k not in RESUME_FREE_SETTINGS and config.get(k) != saved.get(k))
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}" for k in differ)
        raise UsageError(f"--resume {path}: settings differ from the run that wrote it ({details}); "
                         "resume with the same settings or start a new --output_dir")


def newest_complete_checkpoint(path: Path) -> Path | None:
    """The most recently written complete ``checkpoint*.pth`` in ``path``'s folder other than ``path``."""
    others = [p for p in path.parent.glob("checkpoint*.pth") if p.resolve() != path.resolve() and is_complete(p)]
    return max(others, key=lambda p: p.stat().st_mtime, default=None)


def read_checkpoint(path: Path, config: dict[str, Any], trust: bool = False,
                    added: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reads a checkpoint to resume from and checks that it belongs to this run, before anything is built.

    Args:
        path: The ``--resume`` file.
        config: This run's flat settings (``run_settings``).
        trust: Read the file with the full unpickler (``--trust_checkpoint``).
        added: This run's method's ``added_settings`` (see ``check_settings``).

    Raises:
        IncompleteFile: The file is cut short; the message names the newest complete checkpoint beside it.
        UsageError: A missing, broken or refused file, not a training checkpoint, or one of another
            method or other settings.
    """
    try:
        ckpt = load_file(path, "--resume", trust=trust)
    except IncompleteFile as err:
        earlier = newest_complete_checkpoint(path)
        hint = f"; the newest complete checkpoint beside it is {earlier}" if earlier else ""
        raise IncompleteFile(f"{err}{hint}") from err
    ours = ckpt.get("mokd_fast") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict) or not any(isinstance(v, dict) for v in ckpt.values()) or (
            ours is not None and not isinstance(ours, dict)):
        raise UsageError(f"--resume {path} holds {describe_contents(ckpt)}, not a training checkpoint "
                         "(train.py writes checkpoint.pth in its --output_dir)")
    if ours is not None:
        check_settings(ours, path, config, added)
    return ckpt


def load_checkpoint(
    ckpt: dict[str, Any],
    path: Path,
    model: Method,
    optimizers: dict[str, torch.optim.Optimizer],
    scalers: dict[str, GradScaler] | None,
    iters_per_epoch: int,
    data_steps: int | None = None,
) -> tuple[int, list[dict[str, Any]] | None]:
    """Puts a checkpoint from ``read_checkpoint`` into the built model, optimisers and scalers.

    Ours resume at the exact step with every rank's RNG; an official ``main_mokd.py`` checkpoint
    resumes at the start of its ``epoch`` with fresh RNG states.

    Returns:
        The number of completed steps, and the saved per-rank RNG states (None for official ones).

    Raises:
        UsageError: Other iterations per epoch, or state that does not fit this model.
    """
    ours = ckpt.get("mokd_fast")
    data_steps = data_steps or iters_per_epoch
    if ours is not None and (ours["iters_per_epoch"], ours.get("data_steps", ours["iters_per_epoch"])) != (
            iters_per_epoch, data_steps):
        raise UsageError(
            f"--resume {path}: it was written with {ours['iters_per_epoch']} steps per epoch and "
            f"{ours.get('data_steps', ours['iters_per_epoch'])} per pass over the data, this run has "
            f"{iters_per_epoch} and {data_steps} (dataset size, batch size, number of processes or --epoch_length "
            "changed); the schedules and the data order would not line up"
        )
    try:
        rest = model.load_checkpoint_state(ckpt)
        for name, opt in optimizers.items():
            if f"optimizer_{name}" in rest:
                opt.load_state_dict(rest[f"optimizer_{name}"])
                for group in opt.param_groups:  # NumPy numbers of older and official files become plain ones
                    group.update({k: v.item() for k, v in group.items() if isinstance(v, np.generic)})
        for name, scaler in (scalers or {}).items():
            if f"fp16_scaler_{name}" in rest:
                scaler.load_state_dict(rest[f"fp16_scaler_{name}"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:  # entries missing or of another shape
        problem = " ".join(str(err).split())[:400]
        raise UsageError(f"--resume {path}: it does not fit this model ({type(err).__name__}: {problem})") from err
    if ours is None:
        return int(rest.get("epoch", 0)) * iters_per_epoch, None
    return int(ours["step"]), ours["rng"]
