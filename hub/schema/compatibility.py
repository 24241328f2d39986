"""Whether a feed schema's new version may follow the previous ones under the feed's compatibility mode.

Decided by Apache Avro's own `ReaderWriterCompatibilityChecker`; this module only runs it in
the directions a mode asks for and turns its findings into sentences that name the field and
the rule. Whatever the mode, `device_id` and `time` may not change type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    lookup_writer_field,
    schema_name_equals,
)

from hub.errors import SchemaError
from hub.schema.avro import (
    DEVICE_ID,
    MODES,
    TIME,
    Compatibility,
    FeedSchema,
    avro_parse,
    describe_type,
    logical_type,
)

__all__ = ["MODES", "Compatibility", "check_compatibility"]

Direction = Literal["backward", "forward"]


def check_compatibility(new: FeedSchema, previous: Sequence[FeedSchema], mode: str) -> list[str]:
    """Problems that stop `new` from being registered after `previous` (oldest first) in `mode`; [] if none.

    Versions are numbered 1..n in the order given. Whatever the mode, `device_id` and `time` may
    not change type (Avro itself would let e.g. timestamp-millis become timestamp-micros).
    """
    mode = str(mode).upper()
    if mode not in MODES:
        raise SchemaError(f"unknown compatibility mode {mode!r}: use one of {', '.join(MODES)}")
    if not previous:
        return []
    new_avro = avro_parse(json.loads(new.canonical), new.name)
    old_avro = [avro_parse(json.loads(p.canonical), p.name) for p in previous]
    versions = list(enumerate(old_avro, start=1))
    problems = _key_field_changes(new_avro, versions)
    if mode == "NONE":
        return problems
    checked = versions if mode.endswith("_TRANSITIVE") else versions[-1:]
    directions: tuple[Direction, ...] = (
        ("backward",) if mode.startswith("BACKWARD") else ("forward",) if mode.startswith("FORWARD") else
        ("backward", "forward")
    )  # fmt: skip
    for number, old in checked:
        for direction in directions:
            reader, writer = (new_avro, old) if direction == "backward" else (old, new_avro)
            for problem in _direction_problems(reader, writer, direction, number):
                problems.append(f"{mode}: {problem}")
    return problems


def _key_field_changes(
    new: avro.schema.RecordSchema, versions: list[tuple[int, avro.schema.RecordSchema]]
) -> list[str]:
    problems: list[str] = []
    new_fields = {f.name: f for f in new.fields}
    for number, old in versions:
        old_fields = {f.name: f for f in old.fields}
        for key in (DEVICE_ID, TIME):
            before, after = old_fields.get(key), new_fields.get(key)
            if before is None or after is None:
                continue  # cannot happen for schemas made by parse_feed_schema
            if _key_signature(before.type) != _key_signature(after.type):
                problems.append(
                    f"field '{key}' changed type from {describe_type(before.type)} (version {number}) to "
                    f"{describe_type(after.type)}: the types of '{DEVICE_ID}' and '{TIME}' may never change, "
                    "whatever the compatibility mode; create a new feed instead"
                )
    return problems


def _key_signature(schema: avro.schema.Schema) -> tuple[str, str | None]:
    return (describe_type(schema), logical_type(schema))


def _direction_problems(
    reader: avro.schema.RecordSchema, writer: avro.schema.RecordSchema, direction: Direction, number: int
) -> list[str]:
    """The checker's verdict on reader/writer, broken down by top-level field.

    The checker's result keeps messages and locations in two unordered sets (they cannot be
    paired), loses the location under unions, and memoises by schema object, so a type used by
    two fields is reported once. So: one run on the whole record decides, then one fresh run per
    shared field says which fields are at fault and why.
    """
    overall = _checker().get_compatibility(reader, writer)
    if overall.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    if direction == "backward":
        consequence = f"data written with version {number} cannot be read with the new schema"
    else:
        consequence = f"readers still using version {number} cannot read data written with the new schema"
    problems: list[str] = []
    if not schema_name_equals(reader, writer):
        problems.append(
            f"the record was renamed from {_old(reader, writer, direction).fullname!r} to "
            f"{_new(reader, writer, direction).fullname!r}, so {consequence} (keep the name, or list the old one in "
            "the record's aliases)"
        )
    for index, reader_field in enumerate(reader.fields):
        writer_field = lookup_writer_field(writer_schema=writer, reader_field=reader_field)
        if writer_field is None:
            here = f"/fields/{index}"
            if not any(loc == here or loc.startswith(here + "/") for loc in overall.locations):
                continue  # the reader has a default for it
            name = reader_field.name
            if direction == "backward":
                problems.append(
                    f"field '{name}' was added without a default, so {consequence} (give it a default, e.g. "
                    f'type ["null", ...] with "default": null)'
                )
            else:
                problems.append(
                    f"field '{name}' was removed, but version {number} declares it without a default, so "
                    f"{consequence} (keep the field, or first publish a version that gives it a default)"
                )
            continue
        location = ["/", "fields", str(index)]
        result = _checker().get_compatibility(reader_field.type, writer_field.type, "type", location)
        if result.compatibility is not SchemaCompatibilityType.incompatible:
            continue
        old_type, new_type = (
            (writer_field.type, reader_field.type)
            if direction == "backward"
            else (reader_field.type, writer_field.type)
        )
        old_desc, new_desc = describe_type(old_type), describe_type(new_type)
        change = (
            f"changed type from {old_desc} (version {number}) to {new_desc}"
            if old_desc != new_desc
            else f"({new_desc}) changed incompatibly since version {number}"
        )
        problems.append(
            f"field '{reader_field.name}' {change}, so {consequence} "
            f"({_checker_details(result, reader, reader_field.name)})"
        )
    if not problems:  # the checker objects to something not tied to a field: report it as it is
        details = _checker_details(overall, reader, None)
        problems.append(f"the schemas are incompatible, so {consequence} ({details})")
    return problems


def _checker() -> ReaderWriterCompatibilityChecker:
    """A fresh checker: it memoises results by schema object, with the location of the first encounter."""
    return ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]


def _old(
    reader: avro.schema.RecordSchema, writer: avro.schema.RecordSchema, direction: Direction
) -> avro.schema.RecordSchema:
    return writer if direction == "backward" else reader


def _new(
    reader: avro.schema.RecordSchema, writer: avro.schema.RecordSchema, direction: Direction
) -> avro.schema.RecordSchema:
    return reader if direction == "backward" else writer


def _checker_details(result: SchemaCompatibilityResult, reader: avro.schema.RecordSchema, field: str | None) -> str:
    """The checker's messages in words, with the nested places they concern (when it kept them)."""
    messages = sorted(_explain(m) for m in result.messages)
    places = sorted(
        {p for p in (_location_path(loc, reader) for loc in result.locations) if p and p != field},
    )
    text = "avro: " + "; ".join(messages) if messages else "avro: incompatible"
    if places:
        text += " at " + ", ".join(repr(p) for p in places)
    return text


_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIXED_SIZE = re.compile(r"^expected: (\d+), found: (\d+)$")


def _explain(message: str) -> str:
    """Reword the checker's terse messages (a bare field name, a set of symbols, 'expected: X')."""
    if _BARE_NAME.fullmatch(message):
        return f"nested field '{message}' has no default"
    if message.startswith("{") and message.endswith("}"):
        return f"enum symbols {message} are missing from the reader's enum"
    size = _FIXED_SIZE.fullmatch(message)
    if size:
        return f"fixed size changed (reader has {size.group(2)} bytes, writer {size.group(1)})"
    if message.startswith("expected: "):
        return f"named type must be called '{message.removeprefix('expected: ')}' (or list that name in aliases)"
    return message


def _location_path(location: str, reader: avro.schema.RecordSchema) -> str | None:
    """'/fields/3/type/fields/1/type' -> 'position.lat', walking the reader schema; None for the root.

    The checker forgets the location below a union (it reports '/'), and its union indexes are
    the writer's branches, so the walk stops at a union.
    """
    parts = [t for t in location.split("/") if t]
    path = ""
    schema: avro.schema.Schema = reader
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "fields" and i + 1 < len(parts) and isinstance(schema, avro.schema.RecordSchema):
            index = int(parts[i + 1]) if parts[i + 1].isdigit() else -1
            if not 0 <= index < len(schema.fields):
                break
            field = schema.fields[index]
            path = f"{path}.{field.name}" if path else field.name
            schema = field.type
            i += 2
            if i < len(parts) and parts[i] == "type":
                i += 1
            continue
        if part == "items" and isinstance(schema, avro.schema.ArraySchema):
            path, schema = path + "[]", schema.items
        elif part == "values" and isinstance(schema, avro.schema.MapSchema):
            path, schema = path + "{}", schema.values
        else:
            break  # a union branch, or 'name' / 'size' / 'symbols' of a named type
        i += 1
    return path or None
