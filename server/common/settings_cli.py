"""Command-line flags derived from a pydantic-settings class, and the settings built back.

One field, one flag: ``batch_size`` is ``--batch-size``; its help line is the field's
description plus its default and environment variable, so ``--help`` and the settings class
cannot drift apart. A flag given on the command line overrides the environment, which overrides
the default: only the flags given reach the settings class, whose init arguments win over its
environment. argparse keeps the command line's strings and the settings class converts and
validates them, so a bad flag and a bad environment variable are reported alike, as
``prog: field: problem`` with exit code 2.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from rankserve.server.common.settings_errors import report_invalid_settings

S = TypeVar("S", bound=BaseSettings)

_METAVARS = {int: "N", float: "NUM", str: "TEXT", Path: "PATH"}


def env_var(settings_cls: type[BaseSettings], name: str) -> str:
    """The environment variable that sets field ``name``, e.g. RANKSERVE_RANKER_PORT."""
    return (settings_cls.model_config.get("env_prefix", "") + name).upper()


def flag_of(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(annotation, False)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _default_of(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    shown = str(value) if isinstance(value, Path) else value  # as typed, not PosixPath(...)
    return f"default {shown!r}"


def add_settings_flags(
    parser: argparse.ArgumentParser,
    settings_cls: type[BaseSettings],
    *,
    metavars: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> argparse.ArgumentParser:
    """Adds one flag per field of ``settings_cls`` to ``parser``, with ``dest`` = field name.

    Kinds: str, int, float, Path, ``X | None`` (an empty value means None), ``Literal[...]``
    (its values become choices) and bool (``--x`` / ``--no-x``); any other kind raises
    TypeError here rather than at run time. ``metavars`` names a flag's value (field name ->
    metavar); ``aliases`` keeps other spellings of a flag working (field name -> flags).
    Every flag defaults to None, meaning "not given": the environment or the default applies.
    """
    metavars = metavars or {}
    aliases = aliases or {}
    for name, field in settings_cls.model_fields.items():
        kind, optional = _unwrap_optional(field.annotation)
        empty = "; empty for none" if optional and kind is not bool else ""
        help_line = (f"{field.description or name} ({_default_of(field)}{empty};"
                     f" env {env_var(settings_cls, name)})").replace("%", "%%")
        flags = [flag_of(name), *aliases.get(name, ())]
        if kind is bool:
            parser.add_argument(*flags, dest=name, default=None, help=help_line,
                                action=argparse.BooleanOptionalAction)
            continue
        options: dict[str, Any] = {}
        if typing.get_origin(kind) is Literal:
            options["choices"] = [str(v) for v in typing.get_args(kind)]
            if optional:
                options["choices"].append("")
        elif kind in _METAVARS:
            options["metavar"] = metavars.get(name, _METAVARS[kind])
        else:
            raise TypeError(f"{settings_cls.__name__}.{name}: no flag for a field of type"
                            f" {field.annotation!r}")
        parser.add_argument(*flags, dest=name, default=None, help=help_line, **options)
    return parser


def settings_from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    """The settings with every flag given in ``args`` on top of the environment and defaults.

    Raises pydantic's ValidationError when a value (from a flag or the environment) is invalid.
    """
    given: dict[str, Any] = {}
    for name, field in settings_cls.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if value == "" and _unwrap_optional(field.annotation)[1]:
            value = None
        given[name] = value
    return settings_cls(**given)


def run_with_settings(
    settings_cls: type[S], args: argparse.Namespace, prog: str, main: Callable[[S], int]
) -> int:
    """``main(settings)`` with the settings from ``args``; invalid settings are reported on
    stderr as ``prog: field: problem`` (no traceback) and give exit code 2."""
    try:
        settings = settings_from_args(settings_cls, args)
    except ValidationError as exc:
        return report_invalid_settings(prog, exc)
    return main(settings)
