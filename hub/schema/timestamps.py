"""Timestamps as the hub's hot paths read and write them: plain integers (epoch milliseconds or
microseconds), and the one set of bounds a timestamptz column and Python's datetime both hold.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

import fastavro

# Units per second of the logical types `without_timestamp_types` drops (`date` is kept: rare, and
# its column wants a date).
TIMESTAMP_UNITS: dict[str, int] = {"timestamp-millis": 1_000, "timestamp-micros": 1_000_000}
# Read as plain longs too where a decoder wants every timestamp as an int (ingest's Avro payloads).
LOCAL_TIMESTAMPS = frozenset({"local-timestamp-millis", "local-timestamp-micros"})

# The times a timestamptz column and Python's datetime both hold: years 1 to 9999 (UTC), as
# microseconds since the Unix epoch. Landing refuses a row outside them (out_of_range) and sends
# the two ends themselves to PostgreSQL as -infinity and infinity, as asyncpg does.
MIN_EPOCH_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_EPOCH_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


def without_timestamp_types(
    parsed: dict[str, Any], *, top_level_only: bool = False, local_too: bool = False
) -> dict[str, Any]:
    """A fastavro-parsed copy of a parsed record schema without timestamp-millis/-micros logical types.

    The Avro encoding of a long does not depend on its logical type, so both schemas write and read
    the same bytes; this one just takes and gives plain ints (epoch ms or us) instead of datetimes,
    which is much cheaper in fastavro. With `top_level_only`, only the record's own fields (and the
    branches of their unions) lose them; nested records, arrays and maps keep theirs. With `local_too`
    the local-timestamp types go as well.
    """
    dropped = TIMESTAMP_UNITS.keys() | (LOCAL_TIMESTAMPS if local_too else frozenset())
    plain = _strip_parse_keys(parsed)
    if top_level_only:
        for field in plain.get("fields", []):
            if len(non_null_branches(field.get("type"))) == 1:  # not a jsonb union
                field["type"] = _without_logical(field.get("type"), dropped, nested=False)
    else:
        plain = _without_logical(plain, dropped, nested=True)
    result: Any = fastavro.parse_schema(plain)
    return result  # type: ignore[no-any-return]


def _strip_parse_keys(schema: Any) -> Any:
    """A deep copy without fastavro's bookkeeping keys (`__fastavro_parsed`, `__named_schemas`)."""
    if isinstance(schema, dict):
        return {k: _strip_parse_keys(v) for k, v in schema.items() if not k.startswith("__")}
    if isinstance(schema, list):
        return [_strip_parse_keys(v) for v in schema]
    return schema


def _without_logical(schema: Any, dropped: AbstractSet[str], *, nested: bool) -> Any:
    if isinstance(schema, list):  # a union
        return [_without_logical(s, dropped, nested=nested) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if nested:
        schema = {k: _without_logical(v, dropped, nested=True) for k, v in schema.items()}
    if schema.get("type") == "long" and schema.get("logicalType") in dropped:
        schema = {k: v for k, v in schema.items() if k != "logicalType"}
    return schema


def top_level_time_units(parsed: dict[str, Any]) -> dict[str, int]:
    units: dict[str, int] = {}
    for field in parsed.get("fields", []):
        branches = non_null_branches(field.get("type"))
        if len(branches) == 1 and isinstance(branches[0], dict) and branches[0].get("type") == "long":
            unit = TIMESTAMP_UNITS.get(branches[0].get("logicalType", ""))
            if unit is not None:
                units[field["name"]] = unit
    return units


def non_null_branches(schema: Any) -> list[Any]:
    return [s for s in schema if s != "null"] if isinstance(schema, list) else [schema]
