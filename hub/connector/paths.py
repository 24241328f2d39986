"""Payload paths: how a connector config points into a nested payload.

One syntax for every field reference of a config (`device_id.field`, `time.field`, every
`fields:` source): names separated by dots, and indexes in brackets.

    station.id            the key `id` of the object under `station`
    obs.wind.speed        three objects deep
    readings[0].value     the first item of the array `readings`, then its key `value`
    readings[-1].value    the last item
    ["pm2.5"]             a key that itself contains a dot or a bracket (quoted, '…' or "…")
    pm2_5                 a top-level key, as before

A path is parsed once, when a config is read (`parse_path`), and compiled once per feed by the
ingest decoder; nothing is parsed per message. CSV payloads are flat: there a reference is a
column name of `csv.columns`, taken as it is.
"""

from __future__ import annotations

import re
from typing import Final

Step = str | int
Steps = tuple[Step, ...]

_NAME: Final = re.compile(r"[^.\[\]]+")
_INDEX: Final = re.compile(r"\[(-?\d{1,9})\]")
_QUOTED: Final = re.compile(r"""\[(?:"([^"]+)"|'([^']+)')\]""")
SYNTAX_HINT: Final = (
    "write names separated by dots and indexes in brackets, e.g. station.id, obs.wind.speed, readings[0].value "
    '(quote a key that holds a dot: ["pm2.5"])'
)


def parse_path(text: str) -> Steps:
    """The steps of a path (keys as str, array indexes as int); ValueError naming the position otherwise."""
    if not text:
        raise ValueError(f"an empty path points nowhere: {SYNTAX_HINT}")
    if text != text.strip():
        raise ValueError(f"path {text!r} starts or ends with a space: {SYNTAX_HINT}")
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "[":
            index = _INDEX.match(text, pos)
            if index is not None:
                steps.append(int(index.group(1)))
                pos = index.end()
                continue
            quoted = _QUOTED.match(text, pos)
            if quoted is None:
                raise ValueError(
                    f"path {text!r}: the bracket at position {pos + 1} holds neither a whole number nor a quoted "
                    f"key: {SYNTAX_HINT}"
                )
            steps.append(quoted.group(1) or quoted.group(2))
            pos = quoted.end()
            continue
        if text[pos] == ".":
            if not steps:
                raise ValueError(f"path {text!r} starts with a dot: {SYNTAX_HINT}")
            pos += 1
            if pos >= len(text) or text[pos] in ".[]":
                raise ValueError(f"path {text!r}: a name must follow the dot at position {pos}: {SYNTAX_HINT}")
        elif steps:
            raise ValueError(f"path {text!r}: expected '.' or '[' at position {pos + 1}: {SYNTAX_HINT}")
        name = _NAME.match(text, pos)
        if name is None:
            raise ValueError(f"path {text!r}: unexpected {text[pos]!r} at position {pos + 1}: {SYNTAX_HINT}")
        steps.append(name.group(0))
        pos = name.end()
    return tuple(steps)


def is_flat(text: str) -> bool:
    """Whether a reference is one top-level key (the common case, read with one dict lookup)."""
    return _NAME.fullmatch(text) is not None and text == text.strip()


def render_path(steps: Steps) -> str:
    """The path text of `steps` (the inverse of `parse_path`, quoting keys that need it)."""
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _NAME.fullmatch(step) and step == step.strip():
            out += f".{step}" if out else step
        else:
            out += f'["{step}"]' if '"' not in step else f"['{step}']"
    return out


def flat_name(steps: Steps) -> str:
    """A column-friendly name for a path: `obs.wind.speed` -> `obs_wind_speed`, `a[0].b` -> `a_0_b`."""
    return "_".join(str(s) for s in steps)
