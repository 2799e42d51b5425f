"""Type-check a frozen config dataclass against its annotations, before any range check runs.

Config values arrive from TOML, JSON and the command line, where nothing stops
`d_model = "big"`; without this check the first comparison (`"big" > 0`) fails with a
`TypeError` that names neither the field nor the file. Each config class calls
`check_field_types(self)` first in `__post_init__`, so every later check can trust the types.

Supported annotations are the ones tformer's configs use: `int` (a bool is not an int here,
though Python says it is), `float` (an int is accepted, as TOML writes `1` for `1.0`), `bool`,
`str`, unions such as `X | None`, `list[X]`, and `tuple[X, ...]` (a list is accepted and
stored as a tuple: JSON and TOML have no tuples).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from typing import Any

from tformer.errors import ConfigError

TYPE_NAMES = {  # annotation -> (one value, the items of a list)
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
}


def check_field_types(config: Any) -> None:
    """Raise ConfigError naming the first field of `config` whose value does not match its
    annotation; lists given for tuple fields are stored as tuples."""
    for name, annotation in _hints(type(config)).items():
        given = getattr(config, name)
        value = tuple(given) if isinstance(given, list) and _accepts_tuple(annotation) else given
        if not _matches(value, annotation):
            got = "" if isinstance(given, (list, tuple)) else f" (got {type(given).__name__})"
            raise ConfigError(f"{name}={given!r} must be {_describe(annotation)}{got}")
        if value is not given:
            object.__setattr__(config, name, value)  # frozen: set once, in __post_init__


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Each field's evaluated annotation (`from __future__ import annotations` makes them
    strings), computed once per class."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


def _union_members(annotation: Any) -> tuple[Any, ...]:
    is_union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is (
        typing.Union
    )
    return typing.get_args(annotation) if is_union else (annotation,)


def _accepts_tuple(annotation: Any) -> bool:
    return any(typing.get_origin(m) is tuple for m in _union_members(annotation))


def _matches(value: object, annotation: Any) -> bool:
    members = _union_members(annotation)
    if len(members) > 1:
        return any(_matches(value, member) for member in members)
    if annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        item, *rest = typing.get_args(annotation)
        assert rest == ([Ellipsis] if origin is tuple else []), f"unsupported: {annotation}"
        return isinstance(value, origin) and all(_matches(v, item) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool subclasses int, but `n_layers = true` is a mistake
        return False
    if annotation is int:
        return isinstance(value, numbers.Integral)
    if annotation is float:
        return isinstance(value, numbers.Real)
    assert annotation is str, f"check_field_types does not know the annotation {annotation}"
    return isinstance(value, str)


def _describe(annotation: Any) -> str:
    members = _union_members(annotation)
    if len(members) > 1:
        return " or ".join(_describe(member) for member in members)
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) in (tuple, list):
        return f"a list of {TYPE_NAMES[typing.get_args(annotation)[0]][1]}"
    return TYPE_NAMES[annotation][0]
