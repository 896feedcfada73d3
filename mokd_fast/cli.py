"""``train.py``'s command line: ``--method``, flags generated from the method's two config dataclasses, YAML recipes.

Precedence: dataclass defaults < ``--config FILE.yaml`` < flags on the command line. The method is
``--method`` on the command line, else the recipe's ``method:`` key, else ``mokd``; its settings
classes (``METHODS[name]``) give the flags, so ``train.py --method dogo --help`` lists DoGo's.
Unknown flags and unknown YAML keys are errors, never ignored.
"""

import argparse
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from mokd_fast.core.errors import NonFiniteLoss, UsageError
from mokd_fast.core.settings import bool_flag, field_help, flat_settings
from mokd_fast.methods import METHODS

DEFAULT_METHOD = "mokd"


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse keyword arguments for a field's type annotation."""
    optional = isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)
    base = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
    if typing.get_origin(base) is tuple:
        item_types = typing.get_args(base)
        if len(item_types) == 2 and item_types[1] is Ellipsis:  # tuple[str, ...]: one or more values
            return {"type": item_types[0], "nargs": "+"}
        metavar = ("MIN", "MAX") if len(item_types) == 2 else None
        return {"type": item_types[0], "nargs": len(item_types), "metavar": metavar}
    if base is bool:
        return {"type": bool_flag, "metavar": "BOOL", "nargs": "?", "const": True}  # a bare --flag means True
    return {"type": base}


def _method_help() -> str:
    lines = [f"  {name}: {entry.summary}" for name, entry in METHODS.items()]
    return "methods (--method NAME --help lists that method's flags):\n" + "\n".join(lines)


def build_parser(method: str = DEFAULT_METHOD) -> argparse.ArgumentParser:
    """One flag per field of ``method``'s two config classes, named like the field (MOKD: the official names)."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description=f"Self-supervised pre-training; this help lists the flags of --method {method}. "
                    "MOKD's flags follow the official main_mokd.py.",
        epilog=_method_help(), formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
    )
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=tuple(METHODS),
                        help=f"Training method (default: {DEFAULT_METHOD}); its own flags follow.")
    parser.add_argument("--config", type=str, default=None,
                        help="YAML recipe (see configs/); its keys are flag names; flags given here override it.")
    for cls in METHODS[method].config_classes():
        group = parser.add_argument_group(f"{cls.__name__} (--method {method})")
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kwargs = _flag_kwargs(hints[f.name])
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            default = f.default if f.default is not MISSING else None
            group.add_argument(f"--{f.name}", default=default, help=f"{field_help(f)} (default: {default})", **kwargs)
    return parser


def load_yaml_recipe(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """Reads a recipe, checking that every key is a setting of its method (``method``, its ``method:`` key or mokd)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file; the recipes shipped with mokd-fast are in configs/")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path}: not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of setting: value, got {type(values).__name__}")
    name = method or values.get("method", DEFAULT_METHOD)
    if name not in METHODS:
        raise UsageError(f"--config {path}: method {name!r} is not one of {sorted(METHODS)}")
    known = {f.name for cls in METHODS[name].config_classes() for f in fields(cls)} | {"method"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {unknown} for --method {name}; valid keys are the "
                         f"train.py --method {name} flag names")
    return values


def parse_config(argv: list[str] | None = None) -> tuple[Any, Any]:
    """Parses the command line (and the recipe it names) into the method's two configs.

    Raises:
        UsageError: Unknown flag, key or method, bad value, or a combination the configs reject.
    """
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre_parser.error = _raise_usage  # type: ignore[method-assign]
    pre_parser.add_argument("--method", choices=tuple(METHODS), default=None)
    pre_parser.add_argument("--config", default=None)
    pre, _ = pre_parser.parse_known_args(argv)
    recipe = load_yaml_recipe(pre.config, pre.method) if pre.config else {}
    method = pre.method or recipe.get("method", DEFAULT_METHOD)
    parser = build_parser(method)
    parser.error = _raise_usage  # type: ignore[method-assign]
    if recipe:
        parser.set_defaults(**{k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()})
    args = vars(parser.parse_args(argv))
    args.pop("config")
    args["method"] = method
    return configs_from_dict(args)


def configs_from_dict(values: dict[str, Any]) -> tuple[Any, Any]:
    """Splits a flat settings dict (flags, a saved config.yaml; ``method`` defaults to mokd) into the two configs."""
    values = dict(values)
    method = values.pop("method", DEFAULT_METHOD)
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    classes = METHODS[method].config_classes()
    split = [{f.name: values[f.name] for f in fields(cls) if f.name in values} for cls in classes]
    known = set(split[0]) | set(split[1])
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"unknown settings {unknown} for method {method}")
    for cls_values in split:
        for key, value in cls_values.items():
            if isinstance(value, list):
                cls_values[key] = tuple(value)
    try:
        return classes[0](**split[0]), classes[1](**split[1])
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from err


def flat_config(method: Any, train: Any) -> dict[str, Any]:
    """Both configs as one flat dict of flag name -> value (tuples as lists, for YAML)."""
    return flat_settings(method, train)


def _raise_usage(message: str) -> typing.NoReturn:
    raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """``train.py``: parses, trains, and returns the exit status (2: bad usage or input, 1: diverged)."""
    try:
        method, cfg = parse_config(argv)
        # Imported after parsing, so --help and flag errors answer without loading torch.
        from mokd_fast.core.distributed import shutdown
        from mokd_fast.engine.trainer import Trainer

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
