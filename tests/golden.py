"""Golden records of what users' files and command lines depend on: checkpoint layouts and flag names.

A checkpoint's layout is its entry names, the state-dict keys (made from attribute names) and the
tensor shapes; moving a module keeps them, renaming an attribute or a flag breaks the files and the
scripts people already have. ``tests/test_golden.py`` compares fresh checkpoints and the parsers
with the records in ``tests/golden/``; after a deliberate change, rewrite them with
``python -m tests.golden`` (it trains one step of each method on generated photographs) and say why
in the commit.

The record of a checkpoint is its structure with every tensor replaced by its shape and dtype, the
per-rank RNG states by their count, the settings by their names and texts naming files by a
placeholder (all three depend on the machine and the folders).
Numbers, strings and the optimisers' parameter indices are kept: a checkpoint filled with zeros is
rebuilt from the record alone and must load through the resume path.
"""

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
METHODS = ("mokd", "dogo", "seed", "mcl", "lmcl")


def encode(value: Any, path: tuple = ()) -> Any:
    """A JSON-able record of ``value``: tensors as shape and dtype, containers with their key types kept."""
    if path == ("mokd_fast", "rng"):
        return {"rng_states": len(value)}
    if path == ("mokd_fast", "config"):
        return {"settings": sorted(value)}
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {"dict": [[k, encode(v, (*path, k))] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [encode(v, (*path, i)) for i, v in enumerate(value)]}
    if isinstance(value, str) and "/" in value:
        return "<a text naming a file>"  # a file's path depends on where the run was
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{'.'.join(map(str, path))}: a {type(value).__name__} is not plain checkpoint data")


def zero_filled(record: Any, rng: list[dict], settings: dict[str, Any]) -> Any:
    """The checkpoint ``record`` describes, tensors filled with zeros, with ``rng`` and ``settings`` put in."""
    if isinstance(record, dict):
        if "rng_states" in record:
            return rng[: record["rng_states"]]
        if "settings" in record:
            return {name: settings[name] for name in record["settings"]}
        if "tensor" in record:
            return torch.zeros(record["tensor"], dtype=getattr(torch, record["dtype"]))
        if "dict" in record:
            return {k: zero_filled(v, rng, settings) for k, v in record["dict"]}
        kind, items = next(iter(record.items()))
        built = [zero_filled(v, rng, settings) for v in items]
        return tuple(built) if kind == "tuple" else built
    return record


def flag_names(method: str) -> list[str]:
    """Every option string ``train.py --method METHOD`` accepts."""
    from mokd_fast.cli import build_parser

    return sorted(s for action in build_parser(method)._actions for s in action.option_strings)


def write(runs: dict[str, Path]) -> None:
    """Writes the records of the checkpoints in ``runs`` and of every method's flags."""
    GOLDEN.mkdir(exist_ok=True)
    for method in METHODS:
        record = encode(torch.load(runs[method]))
        (GOLDEN / f"checkpoint_{method}.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    flags = {method: flag_names(method) for method in METHODS}
    (GOLDEN / "flags.json").write_text(json.dumps(flags, indent=1) + "\n")


if __name__ == "__main__":
    from mokd_fast.sample_data.photos import write_image_folder
    from tests.conftest import train_each_method

    with tempfile.TemporaryDirectory() as tmp:
        photos = write_image_folder(Path(tmp) / "photos", images_per_class=4, classes=4)
        write(train_each_method(photos, Path(tmp) / "runs"))
    print(f"wrote {GOLDEN}", file=sys.stderr)
