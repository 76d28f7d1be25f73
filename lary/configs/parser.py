"""Config dataclasses as command lines: each `lary` command is a dataclass whose fields are its options.

    @dataclass(kw_only=True)
    class DemoConfig:
        model: str | None = option("model id or folder", default=None)
        frames: int = option("frames taken from the clip", default=8)

`parse(DemoConfig, argv)` builds the argparse parser from the fields (names, types, defaults, help), checks the values
(`config.validate()`, before any work starts) and returns the config; from Python the command runs with the same
object (`demo(DemoConfig(frames=4))`). A field marked `same_run=False` does not change what a run writes (batch size,
workers, devices): `run_identity(config)` is everything else, what a resumed run must repeat.

These modules import nothing heavy, so `lary --help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from lary.errors import LaryError

MISSING = dataclasses.MISSING


def option(
    help: str,
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    short: str | None = None,
    positional: bool = False,
    one_of: str | None = None,
    required: bool = False,
    group: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    same_run: bool = True,
) -> Any:
    """A config field and its command-line option.

    Args:
        help: the option's help text.
        default, default_factory: as for `dataclasses.field`; without either the option is required.
        flag: the option's name (default `--field-name`); short: an extra short flag such as `-o`.
        positional: a positional argument instead of an option.
        one_of: name of a mutually exclusive group; with `required=True` on any member, one of them must be given.
        group: heading that the option is listed under in `--help`.
        metavar, parse: argparse's `metavar`, and a `str -> value` parser for types argparse does not know.
        same_run: False when the value does not change what the command writes (see `run_identity`).
    """
    metadata = {
        "help": help, "flag": flag, "short": short, "positional": positional, "one_of": one_of,
        "required": required, "group": group, "metavar": metavar, "parse": parse, "same_run": same_run,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _unwrap_optional(hint: Any) -> Any:
    """`X | None` -> `X`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _finite_number(text: str) -> float:
    """A float option's value: a finite number (`inf` or `nan` would pass every range check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _path(text: str) -> Path:
    """A path option's value: never empty (`Path("")` is the working directory)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


TYPES = {float: _finite_number, Path: _path}  # what argparse converts each option's type with


def _argparse_kwargs(field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    meta = field.metadata
    kwargs: dict[str, Any] = {"help": meta["help"]}
    has_default = field.default is not MISSING or field.default_factory is not MISSING
    default = field.default if field.default is not MISSING else (
        field.default_factory() if field.default_factory is not MISSING else None
    )
    base = _unwrap_optional(hint)
    origin = typing.get_origin(base)
    if meta["parse"] is not None:
        kwargs["type"] = meta["parse"]
    elif base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
    elif origin is Literal:
        kwargs["choices"] = list(typing.get_args(base))
        kwargs["type"] = type(kwargs["choices"][0])
    elif origin in (list, tuple):
        item = _unwrap_optional(typing.get_args(base)[0])
        kwargs["nargs"] = "+"
        if typing.get_origin(item) is Literal:
            kwargs["choices"] = list(typing.get_args(item))
            kwargs["type"] = type(kwargs["choices"][0])
        else:
            kwargs["type"] = TYPES.get(item, item)
    elif base in (int, float, str, Path):
        kwargs["type"] = TYPES.get(base, base)
    else:
        raise TypeError(f"option {field.name}: no command-line form for type {base!r}; give it `parse=`")
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if meta["positional"]:
        if has_default:
            kwargs["nargs"] = "?" if kwargs.get("nargs") != "+" else "*"
            kwargs["default"] = default
        return kwargs
    kwargs["dest"] = field.name
    kwargs["default"] = default
    if not has_default and not meta["one_of"]:
        kwargs["required"] = True
    if default not in (None, False, (), []) and "(default" not in kwargs["help"]:
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        kwargs["help"] += f" (default: {shown})"
    return kwargs


def build_parser(config_class: type, prog: str, description: str) -> argparse.ArgumentParser:
    """The argparse parser of a config dataclass (`--help` lists the fields' help, grouped)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(config_class)
    sections: dict[str, argparse._ArgumentGroup] = {}
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    fields = [field for field in dataclasses.fields(config_class) if field.init and "help" in field.metadata]
    required_groups = {field.metadata["one_of"] for field in fields if field.metadata["one_of"] and field.metadata["required"]}
    for field in fields:
        meta = field.metadata
        target: Any = parser
        if meta["group"]:
            target = sections.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        if meta["one_of"]:
            name = meta["one_of"]
            if name not in exclusive:
                exclusive[name] = target.add_mutually_exclusive_group(required=name in required_groups)
            target = exclusive[name]
        kwargs = _argparse_kwargs(field, hints[field.name])
        if meta["positional"]:
            target.add_argument(field.name, **kwargs)
            continue
        flags = [meta["flag"] or "--" + field.name.replace("_", "-")]
        if meta["short"]:
            flags.insert(0, meta["short"])
        target.add_argument(*flags, **kwargs)
    return parser


def from_namespace(config_class: type, namespace: argparse.Namespace):
    """The config of parsed arguments; list-typed fields get lists, tuple-typed fields tuples."""
    values = {}
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.init or field.name not in vars(namespace):
            continue
        value = getattr(namespace, field.name)
        if isinstance(value, list) and typing.get_origin(_unwrap_optional(hints[field.name])) is tuple:
            value = tuple(value)
        values[field.name] = value
    return config_class(**values)


def validate(config) -> None:
    """Run the config's own checks (`validate()`), if it has any: bad values end before any work starts."""
    check = getattr(config, "validate", None)
    if check is not None:
        check()


def parse(config_class: type, argv: Sequence[str], prog: str, description: str = ""):
    """Parse `argv` into a validated `config_class`."""
    config = from_namespace(config_class, build_parser(config_class, prog, description).parse_args(list(argv)))
    validate(config)
    return config


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def to_dict(config) -> dict[str, Any]:
    """Every field, JSON-ready (paths as strings, tuples as lists)."""
    return {field.name: _jsonable(getattr(config, field.name)) for field in dataclasses.fields(config)}


def run_identity(config) -> dict[str, Any]:
    """The fields that define what a run writes (all but `same_run=False`), JSON-ready."""
    return {
        field.name: _jsonable(getattr(config, field.name))
        for field in dataclasses.fields(config)
        if field.metadata.get("same_run", True)
    }


def require(condition: bool, message: str) -> None:
    """`validate()` helper: a `LaryError` with `message` unless `condition` holds."""
    if not condition:
        raise LaryError(message)


def positive(config, *names: str) -> None:
    """`validate()` helper: each named field is an integer >= 1 (or None)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise LaryError(f"--{name.replace('_', '-')} must be a positive integer; got {value}")
