"""Declaring a setting once: its type comes from the annotation, its default and help from ``setting``.

The dataclasses built from these fields are the single source for ``train.py``'s flags, the YAML
recipes in ``configs/`` and the ``config.yaml`` saved next to the checkpoints.
"""

import argparse
from dataclasses import Field, asdict, field
from typing import Any

TRUST_FLAG = "--trust_checkpoint"
TRUST_HELP = ("Read the checkpoint with Python's full unpickler, which runs any code a .pth file carries: only for "
              "files you trust. Without it, files are read as data and one that asks for more is refused.")


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field carrying the help text (and choices) its command-line flag shows."""
    return field(default=default, metadata={"help": help, "choices": choices})


def bool_flag(text: str) -> bool:
    """Parses a boolean flag value the way the official ``main_mokd.py`` does (True/False, on/off, 1/0)."""
    lowered = text.lower()
    if lowered in {"on", "true", "1"}:
        return True
    if lowered in {"off", "false", "0"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}; use True/False, on/off or 1/0")


def field_help(f: Field) -> str:
    """The help text declared with ``setting``."""
    return f.metadata.get("help", "")


def flat_settings(*configs: Any) -> dict[str, Any]:
    """Config dataclasses as one flat dict of flag name -> value (tuples as lists, for YAML)."""
    out = {key: value for config in configs for key, value in asdict(config).items()}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def require(ok: bool, message: str) -> None:
    """Raises ``ValueError(message)`` unless ``ok``: the settings' validation."""
    if not ok:
        raise ValueError(message)


def require_min(cfg: Any, minimum: int, *names: str) -> None:
    """Each named setting of ``cfg`` is at least ``minimum``; else a ``ValueError`` naming the flag and its value."""
    for name in names:
        require(getattr(cfg, name) >= minimum, f"--{name} must be >= {minimum}, got {getattr(cfg, name)}")


def require_positive(cfg: Any, *names: str) -> None:
    """Each named setting of ``cfg`` is above 0; else a ``ValueError`` naming the flag and its value."""
    for name in names:
        require(getattr(cfg, name) > 0, f"--{name} must be > 0, got {getattr(cfg, name)}")

