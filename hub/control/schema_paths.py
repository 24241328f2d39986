"""Whether a payload path can exist in an Avro schema (for feeds whose devices send Avro): pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.connector.paths import parse_path, render_path


def path_problem(parsed: Mapping[str, Any], text: str, renames: Mapping[str, str] | None = None) -> str | None:
    """Why `text` cannot point at a value of records of schema `parsed`, or None when it can.

    Keys step into record fields (or map values), indexes into arrays; a nullable union is
    followed into its other branch, and a union of several types could hold anything.
    `renames` maps the partner's key field names to the hub's (the schema is the hub's version).
    """
    try:
        steps = parse_path(text)
    except ValueError as exc:
        return str(exc)
    named: Mapping[str, Any] = parsed.get("__named_schemas", {})
    current: Any = parsed
    for i, step in enumerate(steps):
        current = _resolve(current, named)
        if current is None:  # a union of several types: anything may follow
            return None
        kind = current.get("type") if isinstance(current, dict) else current
        where = render_path(steps[:i]) or "the record"
        if isinstance(step, str):
            if kind == "record":
                names = {f["name"]: f for f in current["fields"]}
                name = (renames or {}).get(step, step) if i == 0 else step
                if name not in names:
                    return f"{where} has no field {step!r} (its fields: {', '.join(names)})"
                current = names[name]["type"]
                continue
            if kind == "map":
                current = current["values"]
                continue
            return f"{where} is {_a(kind)}, not a record or a map, so it has no key {step!r}"
        if kind != "array":
            return f"{where} is {_a(kind)}, not an array, so it has no item [{step}]"
        current = current["items"]
    return None


def _resolve(avro_type: Any, named: Mapping[str, Any]) -> Any:
    """A type with named references looked up and a nullable union unwrapped; None for a wider union."""
    while True:
        if isinstance(avro_type, str):
            if avro_type not in named:
                return avro_type
            avro_type = named[avro_type]
            continue
        if isinstance(avro_type, list):
            branches = [b for b in avro_type if b != "null"]
            if len(branches) != 1:
                return None
            avro_type = branches[0]
            continue
        if isinstance(avro_type, dict) and isinstance(avro_type.get("type"), dict | list):
            avro_type = avro_type["type"]
            continue
        return avro_type


def _a(kind: Any) -> str:
    kind = str(kind)
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
