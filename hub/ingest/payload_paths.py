"""Reading a value at a payload path (`station.id`, `readings[0].value`), compiled once per feed.

`getter(steps, label)` turns a parsed path (hub.connector.paths) into a function of the decoded
payload that returns the value there, or `MISSING` when the payload lacks it: a key that is
absent, an array too short, or null (or absent) on the way. A value of the wrong kind on the
way (a string where the path needs an object) is `wrong_type`, naming the field and the part
of the path that was not an object or array.

Paths of keys only, the usual shape, read with chained subscripts in one `try` (what a
hand-written lookup costs); anything unusual there falls back to the step-by-step walk, which
decides what to report. Flat references (one key) are not compiled: the decoder reads them
with one `dict.get`, as before paths existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.connector.paths import Steps, render_path
from hub.errors import PayloadError
from hub.ingest.describe import found
from hub.ingest.field_converters import MISSING

Getter = Callable[[Any], Any]


def getter(steps: Steps, label: str) -> Getter:
    """A function reading `steps` from a decoded payload (see the module docstring)."""
    walk = _walker(steps, label)
    if not all(isinstance(s, str) for s in steps):
        return walk
    if len(steps) == 2:
        a, b = steps

        def get2(obj: Any) -> Any:
            try:
                return obj[a][b]
            except (KeyError, TypeError, IndexError):
                return walk(obj)

        return get2
    if len(steps) == 3:
        a, b, c = steps

        def get3(obj: Any) -> Any:
            try:
                return obj[a][b][c]
            except (KeyError, TypeError, IndexError):
                return walk(obj)

        return get3
    return walk


def _walker(steps: Steps, label: str) -> Getter:
    def walk(obj: Any) -> Any:
        value = obj
        for i, step in enumerate(steps):
            if value is None or value is MISSING:
                return MISSING
            kind = type(value)
            if type(step) is str:
                if kind is dict:
                    value = value.get(step, MISSING)
                    continue
                raise _not_a(label, steps[:i], "an object", value, steps)
            if kind is list:
                index: int = step  # type: ignore[assignment]
                value = value[index] if -len(value) <= index < len(value) else MISSING
                continue
            raise _not_a(label, steps[:i], "an array", value, steps)
        return value

    return walk


def _not_a(label: str, where: Steps, expected: str, value: Any, steps: Steps) -> PayloadError:
    return PayloadError(
        "wrong_type",
        f"{label}: payload field {render_path(where)!r} should be {expected} to read {render_path(steps)!r}, "
        f"got {found(value)}",
    )
