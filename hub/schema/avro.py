"""Feed schemas: parse an Avro schema file and derive its SQL columns (compatibility.py checks new versions).

A feed schema is an Avro record with a non-nullable string device id field and a non-nullable
event time field (long, timestamp-millis or timestamp-micros). The partner may call them what it
calls them (`station_id`, `observed_at`: the connector config's `device_id.schema_field` and
`time.schema_field`, `KeyNames` here); the hub's own version of the schema, the one registered,
written to Kafka and landed, names them `device_id` and `time`, with the partner's names kept as
Avro `aliases` (`hub_schema`). Every top-level field becomes an SQL column, so its name must be a
safe lower-case identifier. Errors are `SchemaError`s whose message starts with the schema's
source file and names the field and the rule.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, TypeGuard

import avro.errors
import avro.schema
import fastavro
from fastavro.schema import SchemaParseException, UnknownType

from hub.errors import SchemaError, shortened
from hub.schema.timestamps import top_level_time_units, without_timestamp_types


class Compatibility(StrEnum):
    """A feed's compatibility mode (checked by compatibility.py; named here, so that reading a connector
    config, as every worker does, does not load Apache Avro's compatibility checker)."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


MODES = tuple(str(m) for m in Compatibility)

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


class KeyFieldError(SchemaError):
    """The schema lacks (or clashes with) a key field named by the connector config; `key` is that config key."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class KeyNames:
    """What a partner's schema calls the device id and event time fields (the config's `*.schema_field`)."""

    device_id: str = DEVICE_ID
    time: str = TIME

    @property
    def own(self) -> bool:
        """Whether the partner names either key field otherwise than the hub."""
        return (self.device_id, self.time) != (DEVICE_ID, TIME)


@dataclass(frozen=True)
class FeedSchema:
    name: str  # the file's base name, e.g. 'traffic_count'
    canonical: str  # the hub's schema JSON, keys sorted, no whitespace: what is registered and compared
    parsed: dict[str, Any]  # fastavro.parse_schema result, for schemaless_writer/reader
    fields: tuple[str, ...]  # top-level field names of the hub's schema, in schema order
    columns: tuple[Column, ...]  # device_id and time first, then the other fields in schema order
    renamed: tuple[tuple[str, str], ...] = ()  # (the partner's name, the hub's name) of renamed key fields

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
        return top_level_time_units(self.parsed)


# --------------------------------------------------------------------------- parsing


def load_feed_schema(path: Path, keys: KeyNames | None = None) -> FeedSchema:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SchemaError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_feed_schema(text, str(path), keys)


def parse_feed_schema(text: str, source: str, keys: KeyNames | None = None) -> FeedSchema:
    """Parse and check one feed schema; `source` (the file name) starts every error message.

    With `keys` naming the partner's own key fields, the result is the hub's version of the schema
    (see `hub_schema`).
    """
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
    renamed: tuple[tuple[str, str], ...] = ()
    if keys is not None and keys.own:
        avro_parse(data, source)  # the partner's own schema must be valid Avro as it is
        data, renamed = hub_schema(data, keys, source)
        parsed = _fastavro_parse(data, source)
    record = avro_parse(data, source)
    _check_key_fields(record, source, dict((hub, own) for own, hub in renamed))
    columns = _columns(record, source)
    return FeedSchema(
        name=_base_name(source),
        canonical=canonical_json(data),
        parsed=parsed,
        fields=tuple(f.name for f in record.fields),
        columns=columns,
        renamed=renamed,
    )


def hub_schema(data: dict[str, Any], keys: KeyNames, source: str) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
    """The partner's record schema with its key fields named `device_id` and `time` (their own names as aliases).

    Only names change, so both schemas write and read the same bytes: a device sending Avro written
    with the partner's schema is read with the hub's, and every Kafka consumer, landing and the
    tables see one vocabulary whatever each partner calls its fields.
    """
    fields = data.get("fields")
    if not isinstance(fields, list):
        return data, ()
    names = [f.get("name") for f in fields if isinstance(f, dict)]
    renames = [(own, hub, key) for own, hub, key in (
        (keys.device_id, DEVICE_ID, "device_id.schema_field"), (keys.time, TIME, "time.schema_field")
    ) if own != hub]  # fmt: skip
    for own, hub, key in renames:
        what = "device id" if hub == DEVICE_ID else "event time"
        if own not in names:
            raise KeyFieldError(
                f"{source}: has no field {own!r}, which the connector config's {key} names as the {what}: "
                f"change {key} to the schema's {what} field (its fields: {', '.join(map(str, names))})",
                key,
            )
        if hub in names:
            raise KeyFieldError(
                f"{source}: field {hub!r} is not the {what} ({key} names {own!r}), but the hub's records and tables "
                f"call the {what} {hub!r}: rename the schema's field {hub!r}, or remove {key} from the connector "
                f"config if {hub!r} is the {what}",
                key,
            )
    out = {**data, "fields": []}
    for f in fields:
        rename = next((r for r in renames if isinstance(f, dict) and f.get("name") == r[0]), None)
        if rename is None:
            out["fields"].append(f)
            continue
        aliases = [a for a in f.get("aliases", []) if a != rename[1]]
        out["fields"].append({**f, "name": rename[1], "aliases": [rename[0], *(a for a in aliases if a != rename[0])]})
    return out, tuple((own, hub) for own, hub, _ in renames)


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


def _check_key_fields(record: avro.schema.RecordSchema, source: str, own: dict[str, str] | None = None) -> None:
    """The key fields' rules; `own` maps the hub's names to the partner's, which the messages use."""
    own = own or {}
    by_name = {f.name: f for f in record.fields}
    device_name = f"{own[DEVICE_ID]!r} (device_id.schema_field)" if DEVICE_ID in own else f"'{DEVICE_ID}'"
    time_name = f"{own[TIME]!r} (time.schema_field)" if TIME in own else f"'{TIME}'"
    device = by_name.get(DEVICE_ID)
    if device is None:
        raise SchemaError(
            f"{source}: field '{DEVICE_ID}' is missing: every feed schema needs a non-nullable string device id "
            f"field; if the schema calls it otherwise, name that field in the connector config's "
            f"device_id.schema_field"
        )
    if device.type.type != "string" or logical_type(device.type) is not None:
        raise SchemaError(
            f"{source}: field {device_name} must be a plain string (not nullable, no logicalType); "
            f"found {describe_type(device.type)}"
        )
    time = by_name.get(TIME)
    rule = f"field {time_name} must be a long with logicalType timestamp-millis or timestamp-micros"
    if time is None:
        raise SchemaError(
            f"{source}: {rule}, and it is missing; if the schema calls its event time otherwise, name that field "
            "in the connector config's time.schema_field"
        )
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
