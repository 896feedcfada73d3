"""The output folder: never overwritten, resumed only with the same settings, complete only with report.json."""

import json
import os
from pathlib import Path
from typing import Any

from mokd_fast.core.errors import UsageError

STATE = ".convert_state.json"  # written first: marks a conversion under way and records its settings
REPORT = "report.json"  # written last: marks a complete conversion


def write_json_atomic(path: Path, obj: Any) -> None:
    """Writes JSON through a temporary name, so ``path`` is never a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def open_output(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Prepares ``out`` for a conversion with ``settings``.

    Raises:
        UsageError: ``out`` holds a finished conversion; holds a partial one and ``resume`` is off;
            holds one with other settings; or is a non-empty folder of something else.
    """
    if (out / REPORT).exists():
        raise UsageError(f"OUT {out} already holds a finished conversion ({REPORT}); choose another OUT")
    state = out / STATE
    if state.exists():
        if not resume:
            raise UsageError(f"OUT {out} holds a partial conversion; pass --resume to finish it, or choose another OUT")
        saved = json.loads(state.read_text())
        differ = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
        if differ:
            raise UsageError(f"--resume: settings differ from the interrupted run in {differ}; use the same flags")
        return
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"OUT {out} exists and is not empty; choose a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(state, settings)
    except OSError as err:
        raise UsageError(f"OUT {out} cannot be written ({err.strerror}); choose another folder") from err
