"""Feed schemas: parse an Avro schema file and derive its SQL columns (compatibility.py checks new versions).

A feed schema is an Avro record with a non-nullable string `device_id` and a non-nullable
`time` (long, timestamp-millis or timestamp-micros). Every top-level field becomes an SQL
column, so its name must be a safe lower-case identifier. Errors are `SchemaError`s whose
message starts with the schema's source file and names the field and the rule.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeGuard

import avro.errors
import avro.schema
import fastavro
from fastavro.schema import SchemaParseException, UnknownType

from hub.errors import SchemaError, shortened

COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Columns the hub adds to every feed table itself.
RESERVED_COLUMNS = frozenset({"received_at", "ingested_at"})
DEVICE_ID = "device_id"
TIME = "time"
TIME_LOGICAL_TYPES = ("timestamp-millis", "timestamp-micros")
NUMERIC_MAX_PRECISION = 1000  # PostgreSQL's limit for numeric(p, s)


@dataclass(frozen=True)
class Column:
    name: str  # SQL column name == Avro field name
    sql_type: (
        str  # text, bigint, integer, double precision, real, boolean, bytea, timestamptz, date, numeric(p,s), jsonb
    )
    nullable: bool
    numeric: bool  # int/long/float/double/decimal: may be averaged in rollups


@dataclass(frozen=True)
class FeedSchema:
    name: str  # the file's base name, e.g. 'traffic_count'
    canonical: str  # the full schema JSON, keys sorted, no whitespace: what is registered and compared
    parsed: dict[str, Any]  # fastavro.parse_schema result, for schemaless_writer/reader
    fields: tuple[str, ...]  # top-level field names, in schema order
    columns: tuple[Column, ...]  # device_id and time first, then the other fields in schema order

    @cached_property
    def parsed_raw(self) -> dict[str, Any]:
        """`parsed` with the timestamp logical types of top-level fields dropped: those read as plain
        longs (epoch milliseconds or microseconds, as `time_units` says) and encode byte-identically.

        Nested types are left alone (their values land in jsonb columns as fastavro renders them).
        Computed once per schema (the dataclass is frozen; cached_property writes `__dict__` itself).
        """
        return without_timestamp_types(self.parsed, top_level_only=True)

    @cached_property
    def time_units(self) -> dict[str, int]:
        """Top-level fields read as longs by `parsed_raw`: name -> units per second (1000 or 1000000)."""
        return _top_level_time_units(self.parsed)


# --------------------------------------------------------------------------- raw timestamps

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
            if len(_non_null_branches(field.get("type"))) == 1:  # not a jsonb union
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


def _top_level_time_units(parsed: dict[str, Any]) -> dict[str, int]:
    units: dict[str, int] = {}
    for field in parsed.get("fields", []):
        branches = _non_null_branches(field.get("type"))
        if len(branches) == 1 and isinstance(branches[0], dict) and branches[0].get("type") == "long":
            unit = TIMESTAMP_UNITS.get(branches[0].get("logicalType", ""))
            if unit is not None:
                units[field["name"]] = unit
    return units


def _non_null_branches(schema: Any) -> list[Any]:
    return [s for s in schema if s != "null"] if isinstance(schema, list) else [schema]


# --------------------------------------------------------------------------- parsing


def load_feed_schema(path: Path) -> FeedSchema:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SchemaError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_feed_schema(text, str(path))


def parse_feed_schema(text: str, source: str) -> FeedSchema:
    """Parse and check one feed schema; `source` (the file name) starts every error message."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # absurdly deep nesting; huge integer literals
        raise SchemaError(f"{source}: invalid JSON: {exc}") from None
    parsed = _fastavro_parse(data, source)
    if not isinstance(data, dict) or data.get("type") != "record":
        found = data.get("type") if isinstance(data, dict) else data
        raise SchemaError(
            f'{source}: the top-level type must be "record" (one field per column), not {_short_json(found)}'
        )
    record = avro_parse(data, source)
    _check_key_fields(record, source)
    columns = _columns(record, source)
    return FeedSchema(
        name=_base_name(source),
        canonical=canonical_json(data),
        parsed=parsed,
        fields=tuple(f.name for f in record.fields),
        columns=columns,
    )


def _base_name(source: str) -> str:
    """'schemas/traffic_count.avsc' -> 'traffic_count'; a source that is not a file name is kept whole."""
    base = Path(source).name
    return base.removesuffix(".avsc") if base.endswith(".avsc") else base


def canonical_json(schema_json: Any) -> str:
    """The text that is registered and compared: the whole schema (docs, defaults, logical types kept)."""
    return json.dumps(schema_json, sort_keys=True, separators=(",", ":"))


def avro_to_columns(schema_json: dict[str, Any], *, source: str = "schema") -> tuple[Column, ...]:
    """The SQL columns of a record schema (device_id and time first, then the other fields in order)."""
    _fastavro_parse(schema_json, source)
    if schema_json.get("type") != "record":
        raise SchemaError(f'{source}: the top-level type must be "record", not {_short_json(schema_json.get("type"))}')
    return _columns(avro_parse(schema_json, source), source)


def _fastavro_parse(data: Any, source: str) -> dict[str, Any]:
    try:
        parsed: Any = _parse_fastavro_json(data)
    except Exception as exc:  # fastavro raises TypeError, KeyError, AttributeError... on malformed schemas
        raise SchemaError(_invalid(source, data, _parse_fastavro_json, _fastavro_reason(data, exc))) from None
    if not isinstance(parsed, dict):
        # A bare type name or a union: valid Avro, but not a record (reported by the caller).
        return {"type": parsed}
    return parsed


def _parse_fastavro_json(data: Any) -> Any:
    # parse_schema may add keys to the dicts it is given: keep `data` as the author wrote it.
    return fastavro.parse_schema(copy.deepcopy(data))


def _fastavro_reason(data: Any, exc: Exception) -> str:
    if isinstance(exc, UnknownType):
        return f"unknown type {exc}"
    if isinstance(exc, SchemaParseException):
        return str(exc)
    # fastavro tripped over the input's shape; Apache Avro usually explains it better.
    try:
        _parse_avro_json(data)
    except Exception as avro_exc:
        return str(avro_exc)
    return f"{type(exc).__name__}: {exc}"


_MAX_BLAME_FIELDS = 300


def _invalid(source: str, data: Any, parse: Callable[[Any], object], reason: str) -> str:
    """The message for a schema a parser rejects, naming the first top-level field that makes it invalid.

    Parsers do not say which field they choke on, so parse growing prefixes of the field list
    (a field may use a named type defined by an earlier one) until the first failure.
    """
    # Parsers quote the input in their messages, sometimes all of it (a 25 KB schema came back whole).
    reason = shortened(reason, 300)
    fields = data.get("fields") if isinstance(data, dict) else None
    if isinstance(fields, list) and 0 < len(fields) <= _MAX_BLAME_FIELDS and _parses(parse, {**data, "fields": []}):
        for count in range(1, len(fields) + 1):
            if not _parses(parse, {**data, "fields": fields[:count]}):
                field = fields[count - 1]
                name = field.get("name") if isinstance(field, dict) else None
                label = f"field {shortened(name, 80)!r}" if isinstance(name, str) else f"field number {count}"
                return f"{source}: {label} is not valid Avro: {reason}"
    return f"{source}: not a valid Avro schema: {reason}"


def _parses(parse: Callable[[Any], object], data: Any) -> bool:
    try:
        parse(data)
    except Exception:
        return False
    return True


def avro_parse(data: dict[str, Any], source: str) -> avro.schema.RecordSchema:
    try:
        schema = _parse_avro_json(data)
    except Exception as exc:  # avro raises SchemaParseException, but also TypeError etc. on odd shapes
        raise SchemaError(_invalid(source, data, _parse_avro_json, f"(Apache Avro) {exc}")) from None
    if not isinstance(schema, avro.schema.RecordSchema):
        raise SchemaError(f'{source}: the top-level type must be "record"')
    return schema


def _parse_avro_json(data: Any) -> avro.schema.Schema:
    with warnings.catch_warnings():
        # Avro warns and ignores a logical type it cannot apply (e.g. timestamp-millis on an int);
        # the column mapping and the key-field rules below report what matters.
        warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
        return avro.schema.parse(json.dumps(data))


def _check_key_fields(record: avro.schema.RecordSchema, source: str) -> None:
    by_name = {f.name: f for f in record.fields}
    device = by_name.get(DEVICE_ID)
    if device is None:
        raise SchemaError(
            f"{source}: field '{DEVICE_ID}' is missing: every feed schema needs a non-nullable string field "
            f"'{DEVICE_ID}'"
        )
    if device.type.type != "string" or logical_type(device.type) is not None:
        raise SchemaError(
            f"{source}: field '{DEVICE_ID}' must be a plain string (not nullable, no logicalType); "
            f"found {describe_type(device.type)}"
        )
    time = by_name.get(TIME)
    rule = f"field '{TIME}' must be a long with logicalType timestamp-millis or timestamp-micros"
    if time is None:
        raise SchemaError(f"{source}: {rule}, and it is missing")
    if time.type.type != "long" or logical_type(time.type) not in TIME_LOGICAL_TYPES:
        raise SchemaError(f"{source}: {rule} (not nullable); found {describe_type(time.type)}")


# --------------------------------------------------------------------------- columns


def _columns(record: avro.schema.RecordSchema, source: str) -> tuple[Column, ...]:
    columns: list[Column] = []
    for field in record.fields:
        name = field.name
        if name in RESERVED_COLUMNS:
            raise SchemaError(
                f"{source}: field '{name}' is reserved: the hub adds a '{name}' column to every feed table itself; "
                "rename the field"
            )
        if not COLUMN_NAME.fullmatch(name):
            raise SchemaError(
                f"{source}: field {name!r} is not a valid column name: use 1-63 lower-case letters, digits and "
                "underscores, starting with a letter"
            )
        columns.append(_column(name, field.type, source))
    keys = [c for c in columns if c.name in (DEVICE_ID, TIME)]
    return (*keys, *(c for c in columns if c.name not in (DEVICE_ID, TIME)))


def _column(name: str, schema: avro.schema.Schema, source: str) -> Column:
    if isinstance(schema, avro.schema.UnionSchema):
        branches = [s for s in schema.schemas if s.type != "null"]
        if not branches:
            raise SchemaError(f"{source}: field '{name}' can only be null, so it carries no data; remove it")
        if len(branches) == 1:
            sql_type, numeric = _sql_type(name, branches[0], source)
            return Column(name, sql_type, nullable=True, numeric=numeric)
        return Column(name, "jsonb", nullable=True, numeric=False)
    sql_type, numeric = _sql_type(name, schema, source)
    return Column(name, sql_type, nullable=False, numeric=numeric)


_PLAIN_TYPES: dict[str, tuple[str, bool]] = {
    "string": ("text", False),
    "int": ("integer", True),
    "long": ("bigint", True),
    "float": ("real", True),
    "double": ("double precision", True),
    "boolean": ("boolean", False),
    "bytes": ("bytea", False),
    "fixed": ("bytea", False),
    "enum": ("text", False),
    "array": ("jsonb", False),
    "map": ("jsonb", False),
    "record": ("jsonb", False),
    "error": ("jsonb", False),
}


def _sql_type(name: str, schema: avro.schema.Schema, source: str) -> tuple[str, bool]:
    """(SQL type, numeric) of a non-union Avro type."""
    kind = schema.type
    logical = logical_type(schema)
    if kind == "null":
        raise SchemaError(f"{source}: field '{name}' has type null, so it carries no data; remove it")
    if kind == "long" and logical in TIME_LOGICAL_TYPES:
        return "timestamptz", False
    if kind == "int" and logical == "date":
        return "date", False
    if kind in ("bytes", "fixed") and logical == "decimal":
        precision, scale = schema.props.get("precision"), schema.props.get("scale", 0)
        if not (_whole(precision) and _whole(scale) and 1 <= precision <= NUMERIC_MAX_PRECISION):
            raise SchemaError(
                f"{source}: field '{name}' is a decimal with precision {precision!r} and scale {scale!r}: precision "
                f"must be a whole number from 1 to {NUMERIC_MAX_PRECISION}, and scale from 0 to the precision"
            )
        if not 0 <= scale <= precision:
            raise SchemaError(
                f"{source}: field '{name}' is a decimal with precision {precision} and scale {scale}: scale must be "
                "from 0 to the precision"
            )
        return f"numeric({precision},{scale})", True
    if kind in _PLAIN_TYPES:
        return _PLAIN_TYPES[kind]
    return "jsonb", False  # pragma: no cover - every Avro type is listed above


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def logical_type(schema: avro.schema.Schema) -> str | None:
    logical = schema.props.get("logicalType")
    return logical if isinstance(logical, str) else None


def describe_type(schema: avro.schema.Schema) -> str:
    """A short human-readable rendering of an Avro type, e.g. `["null", string]`, `long (timestamp-millis)`."""
    if isinstance(schema, avro.schema.UnionSchema):
        return "[" + ", ".join(describe_type(s) for s in schema.schemas) + "]"
    if isinstance(schema, avro.schema.ArraySchema):
        return f"array<{describe_type(schema.items)}>"
    if isinstance(schema, avro.schema.MapSchema):
        return f"map<{describe_type(schema.values)}>"
    logical = logical_type(schema)
    if logical == "decimal":
        base = f"{schema.type} " if schema.type == "fixed" else ""
        return f"{base}decimal({schema.props.get('precision')},{schema.props.get('scale', 0)})"
    if isinstance(schema, avro.schema.EnumSchema):
        symbols = ", ".join(schema.symbols)
        return f"enum {schema.name} {{{symbols if len(symbols) <= 60 else symbols[:57] + '...'}}}"
    if isinstance(schema, avro.schema.FixedSchema):
        return f"fixed {schema.name}({schema.size})"
    if isinstance(schema, avro.schema.NamedSchema):
        return f"{schema.type} {schema.name}"
    return f"{schema.type} ({logical})" if logical else str(schema.type)


def _short_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
