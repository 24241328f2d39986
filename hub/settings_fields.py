"""How a setting is declared, read from its `HUB_<NAME>` variable and checked (hub/settings.py).

The few types settings take (text, whole and decimal numbers, true/false, paths, a choice of words,
each possibly unset) need no validation library: a worker process then loads none (issue 18).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hub.errors import ConfigError

ENV_PREFIX = "HUB_"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})
_KINDS = (str, int, float, bool, Path)


def setting(
    default: Any,
    description: str = "",
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    secret: bool = False,
) -> Any:
    """A setting's default and what its values must satisfy; `secret` keeps its value out of the repr (logs).

    `description` is for the reader of hub/settings.py (docs/operations.md explains the settings to users).
    """
    bounds = {"gt": gt, "ge": ge, "le": le, "description": description}
    return dataclasses.field(default=default, repr=not secret, metadata=bounds)


@dataclass(frozen=True)
class FieldRule:
    """One setting: its variable, the type it takes, whether it may be unset, its default and its bounds."""

    name: str
    kind: type
    optional: bool
    choices: tuple[str, ...]
    default: Any
    gt: float | None
    ge: float | None
    le: float | None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def parse(self, text: str, where: str | None = None) -> Any:
        """The value of the variable's text (`where`: what an error names, the variable by default)."""
        where = where or self.env
        return self._checked(self._from_text(text, where), where)

    def check(self, value: Any) -> Any:
        """A value given in code: text is read as the variable's would be, other values must have the type."""
        if isinstance(value, str) and (self.kind is not str or self.choices):
            return self.parse(value, self.name)
        if value is None and self.optional:
            return None
        if self.kind is Path and isinstance(value, Path | str):
            value = Path(value)
        elif self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise ConfigError(f"{value!r} is not {_A[self.kind]}", field=self.name)
        return self._checked(value, self.name)

    def _from_text(self, text: str, where: str) -> Any:
        stripped = text.strip()
        if self.optional and stripped == "":
            return None  # an empty variable (`HUB_X=` in a compose file) leaves the setting unset
        if self.choices:
            if stripped not in self.choices:
                raise ConfigError(f"{text!r} is not one of {', '.join(self.choices)}", field=where)
            return stripped
        if self.kind is bool:
            word = stripped.lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ConfigError(f"{text!r} is not true or false (also 1/0, yes/no, on/off)", field=where)
        if self.kind is int:
            try:
                return int(stripped)
            except ValueError:
                raise ConfigError(f"{text!r} is not a whole number", field=where) from None
        if self.kind is float:
            try:
                number = float(stripped)
            except ValueError:
                number = math.nan
            if math.isnan(number):
                raise ConfigError(f"{text!r} is not a number", field=where)
            return number
        if self.kind is Path:
            return Path(text)
        return text

    def _checked(self, value: Any, where: str) -> Any:
        if value is None or not isinstance(value, int | float) or isinstance(value, bool):
            return value
        if self.gt is not None and not value > self.gt:
            raise ConfigError(f"must be greater than {self.gt:g} (got {value!r})", field=where)
        if self.ge is not None and not value >= self.ge:
            raise ConfigError(f"must be at least {self.ge:g} (got {value!r})", field=where)
        if self.le is not None and not value <= self.le:
            raise ConfigError(f"must be at most {self.le:g} (got {value!r})", field=where)
        return value


_A = {str: "text", int: "a whole number", float: "a number", bool: "true or false", Path: "a path"}


def rules_of(cls: type) -> tuple[FieldRule, ...]:
    """The rule of each field of a settings dataclass, from its type hints and `setting(...)` metadata."""
    hints = typing.get_type_hints(cls)
    rules = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        optional = False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = len(args) < len(typing.get_args(hint))
            if len(args) != 1:
                raise TypeError(f"setting {f.name}: one type, possibly with None, is supported ({hint})")
            hint = args[0]
        choices: tuple[str, ...] = ()
        if typing.get_origin(hint) is Literal:
            choices = tuple(str(c) for c in typing.get_args(hint))
            hint = str
        if hint not in _KINDS:
            raise TypeError(f"setting {f.name}: type {hint} is not one of {', '.join(k.__name__ for k in _KINDS)}")
        meta = f.metadata
        rules.append(
            FieldRule(
                name=f.name,
                kind=hint,
                optional=optional,
                choices=choices,
                default=f.default,
                gt=meta.get("gt"),
                ge=meta.get("ge"),
                le=meta.get("le"),
            )
        )
    return tuple(rules)
