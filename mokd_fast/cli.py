"""``train.py``'s command line: flags generated from the two config dataclasses, YAML recipes, overrides.

Precedence: dataclass defaults < ``--config FILE.yaml`` < flags on the command line. Unknown flags
and unknown YAML keys are errors, never ignored.
"""

import argparse
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from mokd_fast.config import MOKDConfig
from mokd_fast.errors import NonFiniteLoss, UsageError
from mokd_fast.settings import bool_flag, field_help, flat_settings
from mokd_fast.train_config import TrainConfig

CONFIG_CLASSES = (MOKDConfig, TrainConfig)


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse keyword arguments for a field's type annotation."""
    optional = isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)
    base = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
    if typing.get_origin(base) is tuple:
        item_types = typing.get_args(base)
        return {"type": item_types[0], "nargs": len(item_types), "metavar": ("MIN", "MAX")}
    if base is bool:
        return {"type": bool_flag, "metavar": "BOOL"}
    return {"type": base}


def build_parser() -> argparse.ArgumentParser:
    """One flag per config field, named like the field (the official flag names)."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="MOKD pre-training (CNN + ViT online distillation). Flags follow the official main_mokd.py.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", type=str, default=None,
                        help="YAML recipe (see configs/); its keys are flag names; flags given here override it.")
    for cls in CONFIG_CLASSES:
        group = parser.add_argument_group(cls.__name__)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kwargs = _flag_kwargs(hints[f.name])
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            default = f.default if f.default is not MISSING else None
            group.add_argument(f"--{f.name}", default=default, help=f"{field_help(f)} (default: {default})", **kwargs)
    return parser


def load_yaml_recipe(path: str | Path) -> dict[str, Any]:
    """Reads a recipe, checking that every key is a known setting."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file; the recipes shipped with mokd-fast are in configs/")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path}: not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of setting: value, got {type(values).__name__}")
    known = {f.name for cls in CONFIG_CLASSES for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {unknown}; valid keys are the train.py flag names")
    return values


def parse_config(argv: list[str] | None = None) -> tuple[MOKDConfig, TrainConfig]:
    """Parses the command line (and the recipe it names) into the two configs.

    Raises:
        UsageError: Unknown flag or key, bad value, or a combination the configs reject.
    """
    parser = build_parser()
    parser.error = _raise_usage  # type: ignore[method-assign]
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        recipe = load_yaml_recipe(pre.config)
        parser.set_defaults(**{k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()})
    args = vars(parser.parse_args(argv))
    args.pop("config")
    return configs_from_dict(args)


def configs_from_dict(values: dict[str, Any]) -> tuple[MOKDConfig, TrainConfig]:
    """Splits a flat settings dict (flags, a saved config.yaml) into the two configs."""
    split = [{f.name: values[f.name] for f in fields(cls) if f.name in values} for cls in CONFIG_CLASSES]
    known = set(split[0]) | set(split[1])
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"unknown settings {unknown}")
    for cls_values in split:
        for key, value in cls_values.items():
            if isinstance(value, list):
                cls_values[key] = tuple(value)
    try:
        return MOKDConfig(**split[0]), TrainConfig(**split[1])
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from err


def flat_config(method: MOKDConfig, train: TrainConfig) -> dict[str, Any]:
    """Both configs as one flat dict of flag name -> value (tuples as lists, for YAML)."""
    return flat_settings(method, train)


def _raise_usage(message: str) -> typing.NoReturn:
    raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """``train.py``: parses, trains, and returns the exit status (2: bad usage or input, 1: diverged)."""
    try:
        method, cfg = parse_config(argv)
        # Imported after parsing, so --help and flag errors answer without loading torch.
        from mokd_fast.distributed import shutdown
        from mokd_fast.engine import Trainer

        try:
            Trainer(method, cfg).fit()
        finally:
            shutdown()
    except UsageError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        print(f"train.py: {err}", file=sys.stderr)
        return 1
    return 0
