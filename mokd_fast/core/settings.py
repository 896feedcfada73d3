"""Declaring a setting once: its type comes from the annotation, its default and help from ``setting``.

The dataclasses built from these fields are the single source for ``train.py``'s flags, the YAML
recipes in ``configs/`` and the ``config.yaml`` saved next to the checkpoints.
"""

import argparse
from dataclasses import Field, asdict, field
from typing import Any


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
