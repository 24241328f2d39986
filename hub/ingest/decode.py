"""Turn one device message into a record ready for `fastavro.schemaless_writer`.

`FeedDecoder(feed, parsed_schema)` precomputes, once per feed and schema version, one converter
closure per schema field; `decode(payload, device_from_topic, received_at_ms)` then does the least
work per message: parse the payload, look each field up, check or convert its type. It never
calls `fastavro.validation.validate` (far too slow for the hot path); its own checks are strict
enough that any record it returns can be encoded (ints within 32/64 bits, finite floats within
the Avro float range, enum symbols, strings without NUL, which PostgreSQL cannot store).

Formats (`feed.format`):
- json: the payload is one UTF-8 JSON object (parsed with orjson); extra keys are ignored.
- csv: the payload is one line split by `csv.delimiter` into `csv.columns` (quoted values are
  read with the csv module); values are text, converted per Avro type: int/long via int() (or an
  integral float), float/double via float(), boolean from true/false/1/0; an empty value is null
  for nullable fields, else the field's default, else `missing_field`.
- avro: the payload is an Avro binary body (no wire header) written with the feed's current
  schema; field mapping does not apply, the device id and time checks do.

The record: `device_id` from the topic level or a payload field (an integer is turned into its
decimal string); `time` as an int in the schema's unit (epoch milliseconds for timestamp-millis,
microseconds for timestamp-micros; fastavro accepts ints for these logical types), either the
receive time or a payload field in `time.format` (iso8601 with 'Z' or an offset; epoch_s,
epoch_ms, epoch_us as a number or numeric string; or a strftime pattern), naive times being in
`time.timezone`; every other schema field from the payload at the path `feed.mapping(field).source`
(`station.id`, `readings[0].value`: hub.connector.paths, compiled once here by
hub.ingest.payload_paths; a top-level key is one `dict.get`), with
`value * scale + offset` applied to numbers when the mapping gives a conversion (an int target
is then rounded to the nearest integer). A field missing from the payload takes its schema
default when it declares one (null for `["null", X]` with default null), else is `missing_field`.
The record's key fields are the hub's `device_id` and `time` whatever the partner's schema calls
them (the decoder gets the hub's version of the schema); messages use the partner's names
(`device_id.schema_field`, `time.schema_field`).

Error codes (`PayloadError.code`). They are part of the hub's public contract: they go into
dead-letter headers and error reports, so existing codes never change meaning.
- `too_large`: the payload is longer than `max_payload_bytes`.
- `not_decodable`: not UTF-8, not a JSON object, a CSV line with the wrong number of columns,
  or not an Avro body of the feed's schema; the message says what was expected.
- `header_line`: (csv, unless `csv.header: false`) the line equals the header; the caller
  skips it (acknowledged and counted, not dead-lettered): it is not an error of the device.
- `missing_field`: a required field is absent (or an empty CSV value); names the schema field
  and the payload field or column it is read from.
- `wrong_type`: a value does not fit the field's Avro type (or range); names the field, the
  expected Avro type and what was found, e.g.
  "field 'pm25' (from 'pm2_5'): expected a number (Avro double), got the string 'high'".
  NaN and infinities are refused for float/double fields.
- `bad_time`: the event time cannot be read; names the field and the expected format.
- `time_out_of_range`: the event time is older than `time.max_age` or further than
  `time.max_future` in the future; says by how much.
- `bad_device_id`: the device id is empty, longer than 128 characters, has characters outside
  [A-Za-z0-9_.:-], or is not a string or integer.

Where the parts live: this module holds the payload formats, the device id and event time
readers, the per-field plan and the schema checks made when a decoder is built;
`hub.ingest.field_converters` builds the per-field converters (one per Avro type);
`hub.ingest.event_time` parses event times and words their range errors; `hub.ingest.describe`
words the types and values that the error messages name.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import fastavro
import orjson

from hub.connector.feed_spec import FeedSpec, PayloadFormat
from hub.connector.paths import is_flat, parse_path
from hub.errors import ConfigError, PayloadError, SchemaError
from hub.ingest.describe import avro_kind, clip, found
from hub.ingest.event_time import out_of_range, plain_time, time_parser
from hub.ingest.field_converters import MISSING, Builder, Converter
from hub.ingest.payload_paths import Getter, getter
from hub.schema.timestamps import without_timestamp_types

DeviceReader = Callable[[Mapping[str, Any], str | None], str]
TimeReader = Callable[[Mapping[str, Any], int], int]

DEVICE_FIELD: Final = "device_id"
TIME_FIELD: Final = "time"
MAX_DEVICE_ID: Final = 128

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_TIME_UNITS: Final = {"timestamp-millis": 1_000, "timestamp-micros": 1_000_000}
# Keeps now +/- max_age/max_future inside a signed 64-bit long for the next ~146,000 years.
_MAX_WINDOW: Final = 2**62


class FeedDecoder:
    """Decodes the messages of one feed into records of one schema version. Not shared between threads."""

    def __init__(
        self,
        feed: FeedSpec,
        parsed_schema: dict[str, Any],
        *,
        max_payload_bytes: int = 65536,
        now: Callable[[], float] = time.time,
    ) -> None:
        parsed_schema = parsed(parsed_schema)
        self.feed = feed
        self.max_payload_bytes = max_payload_bytes
        self._now = now
        self._format = PayloadFormat(feed.format)
        named: Mapping[str, Any] = parsed_schema.get("__named_schemas", {})
        fields: list[dict[str, Any]] = parsed_schema.get("fields", [])
        by_name = {f["name"]: f for f in fields}
        record_name = parsed_schema.get("name", "?")
        _check_device_field(by_name, named, record_name)
        self._unit = _time_unit(by_name, named, record_name)
        for name in feed.fields:
            if name not in by_name:
                raise ConfigError(
                    f"feed {feed.name!r} maps {name!r}, but schema {record_name} has no such field "
                    f"(its fields: {', '.join(by_name)})",
                    field=f"fields.{name}",
                )

        text = feed.format == PayloadFormat.csv
        builder = Builder(named, text=text)
        columns = feed.csv.columns if feed.csv is not None else []
        flat: list[tuple[str, str, Converter]] = []
        nested: list[tuple[str, Getter, Converter]] = []
        for f in fields:
            name = f["name"]
            if name in (DEVICE_FIELD, TIME_FIELD):
                continue
            if feed.format == PayloadFormat.avro:
                source, scale, offset = name, 1.0, 0.0
                label = f"field {name!r}"
                missing = f"field {name!r} is missing from the Avro record"
            else:
                mapping = feed.mapping(name)
                source, scale, offset = mapping.source, mapping.scale, mapping.offset
                label = _label(name, source, text)
                if not text:
                    missing = f"field {name!r} is missing: expected it in payload field {source!r}"
                elif source in columns:
                    missing = f"field {name!r} (from column {source!r}) is empty"
                else:
                    missing = (
                        f"field {name!r} is missing: it is read from column {source!r}, which csv.columns does not list"
                    )
            conv = builder.field(
                f["type"],
                label,
                missing,
                has_default="default" in f,
                default=f.get("default"),
                scale=scale,
                offset=offset,
            )
            path = self._path(source, label)
            if path is None:
                flat.append((name, source, conv))
            else:
                nested.append((name, path, conv))
        # Fields read with one dict lookup, and fields read at a path into nested objects and arrays.
        self._plan: tuple[tuple[str, str, Converter], ...] = tuple(flat)
        self._nested: tuple[tuple[str, Getter, Converter], ...] = tuple(nested)
        self._device: DeviceReader = self._device_reader()
        self._time: TimeReader = self._time_reader()

        self._csv_columns = list(columns)
        self._csv_delimiter = feed.csv.delimiter if feed.csv is not None else ","
        self._csv_header = feed.csv.header if feed.csv is not None else False
        self._reader_schema: dict[str, Any] = {}
        if feed.format == PayloadFormat.avro:
            _refuse_zero_size_arrays(parsed_schema, named, record_name)
            # Timestamps read as plain longs: faster, and what the rest of the decoder works with.
            self._reader_schema = without_timestamp_types(parsed(parsed_schema), local_too=True)
        self._record_name = record_name

    # The hot path.

    def decode(self, payload: bytes, device_from_topic: str | None, received_at_ms: int) -> dict[str, Any]:
        """The record for one message, or PayloadError (see the module docstring for the codes)."""
        if len(payload) > self.max_payload_bytes:
            raise PayloadError(
                "too_large", f"payload is {len(payload)} bytes; this hub accepts at most {self.max_payload_bytes}"
            )
        obj: Mapping[str, Any]
        if self._format is PayloadFormat.json:
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise PayloadError("not_decodable", f"payload is not valid UTF-8 JSON (format json): {exc}") from None
            if type(obj) is not dict:
                raise PayloadError(
                    "not_decodable", f"payload is {found(obj)} in JSON, but format json expects one object {{...}}"
                )
        elif self._format is PayloadFormat.csv:
            obj = self._csv_object(payload)
        else:
            obj = self._avro_object(payload)
        record = {
            DEVICE_FIELD: self._device(obj, device_from_topic),
            TIME_FIELD: self._time(obj, received_at_ms),
        }
        for name, source, conv in self._plan:
            record[name] = conv(obj.get(source, MISSING))
        for name, path, conv in self._nested:
            record[name] = conv(path(obj))
        return record

    def _path(self, reference: str, label: str) -> Getter | None:
        """The compiled reader of a payload reference; None for a top-level key (read with `dict.get`)."""
        if self._format is PayloadFormat.csv or is_flat(reference):
            return None
        try:
            return getter(parse_path(reference), label)
        except ValueError as exc:  # `hub plan` refuses such a config first
            raise ConfigError(str(exc)) from None

    def _csv_object(self, payload: bytes) -> dict[str, str]:
        try:
            line = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError("not_decodable", f"payload is not UTF-8 text (format csv): {exc}") from None
        line = line.rstrip("\r\n")
        if line.startswith("\ufeff"):
            line = line[1:]
        columns = self._csv_columns
        delimiter = self._csv_delimiter
        if not line:
            raise PayloadError("not_decodable", f"payload is empty; format csv expects one line of {_columns(columns)}")
        if "\n" in line or "\r" in line:
            raise PayloadError("not_decodable", "payload has several lines; format csv expects exactly one per message")
        if '"' in line:
            try:
                values = next(csv.reader([line], delimiter=delimiter, strict=True))
            except csv.Error as exc:
                raise PayloadError("not_decodable", f"payload is not one CSV line: {exc}") from None
        else:
            values = line.split(delimiter)
        if len(values) != len(columns):
            raise PayloadError(
                "not_decodable",
                f"expected {len(columns)} values separated by {delimiter!r} ({_columns(columns)}), found {len(values)}",
            )
        if self._csv_header and values[0].strip() == columns[0] and [v.strip() for v in values] == columns:
            raise PayloadError("header_line", "the line is the CSV header (csv.columns); it is skipped")
        return dict(zip(columns, values, strict=True))

    def _avro_object(self, payload: bytes) -> dict[str, Any]:
        buf = io.BytesIO(payload)
        try:
            obj = fastavro.schemaless_reader(buf, self._reader_schema, None)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (the payload is cut short)"
            raise PayloadError(
                "not_decodable", f"payload is not an Avro binary body of schema {self._record_name}: {reason}"
            ) from None
        if buf.tell() != len(payload):
            raise PayloadError(
                "not_decodable",
                f"payload has {len(payload) - buf.tell()} bytes after the Avro record of schema {self._record_name}: "
                f"was it written with another schema (or with a wire-format header)?",
            )
        if type(obj) is not dict:  # pragma: no cover - the schema is a record
            raise PayloadError("not_decodable", f"payload is not an Avro record of schema {self._record_name}")
        return obj

    # Device id.

    def _device_reader(self) -> DeviceReader:
        source = self.feed.device_id
        fullmatch = _DEVICE_ID.fullmatch
        if source.source == "topic":

            def from_topic(obj: Mapping[str, Any], topic: str | None) -> str:
                if topic is not None and fullmatch(topic):
                    return topic
                if topic is None:
                    raise PayloadError(
                        "bad_device_id", "the device id comes from the topic, but the topic has no device id level"
                    )
                raise _bad_device_id(topic, "the topic")

            return from_topic

        # Avro payloads carry the schema's own device id field (its name in the hub's records: device_id).
        field = DEVICE_FIELD if self._format is PayloadFormat.avro else (source.field or DEVICE_FIELD)
        shown = source.field or source.schema_field
        where = f"payload field {shown!r}" if self._format is not PayloadFormat.csv else f"column {shown!r}"
        label = f"device id ({where})"
        path = self._path(field, label)
        name = source.schema_field

        def from_field(obj: Mapping[str, Any], topic: str | None) -> str:
            value = obj.get(field, MISSING) if path is None else path(obj)
            if type(value) is str:
                if fullmatch(value):
                    return value
                raise _bad_device_id(value, where)
            if type(value) is int:
                text = str(value)
                if fullmatch(text):
                    return text
                raise _bad_device_id(text, where)
            if value is MISSING:
                raise PayloadError("missing_field", f"field {name!r} is missing: expected it in {where}")
            raise PayloadError("bad_device_id", f"{label}: expected a string or an integer, got {found(value)}")

        return from_field

    # Event time.

    def _time_reader(self) -> TimeReader:
        cfg = self.feed.time
        unit = self._unit
        if cfg.source == "received":
            factor = unit // 1000

            def received(obj: Mapping[str, Any], received_at_ms: int) -> int:
                return received_at_ms * factor

            return received

        field = cfg.field or cfg.schema_field
        name = cfg.schema_field
        avro = self._format is PayloadFormat.avro
        if avro:
            label = f"field {field!r}"
        else:
            label = f"field {name!r}" + ("" if field == name else f" (from {field!r})")
        if avro and field == name:  # the schema's own time field: an int already
            field = TIME_FIELD
            parse = plain_time(label, unit)
        else:
            parse = time_parser(cfg.format, ZoneInfo(cfg.timezone) if cfg.timezone != "UTC" else UTC, unit, label)
        where = f"column {field!r}" if self._format is PayloadFormat.csv else f"payload field {cfg.field or name!r}"
        path = self._path(field, label)
        max_age = min(cfg.max_age // timedelta(microseconds=1_000_000 // unit), _MAX_WINDOW)
        max_future = min(cfg.max_future // timedelta(microseconds=1_000_000 // unit), _MAX_WINDOW)
        now = self._now

        def from_field(obj: Mapping[str, Any], received_at_ms: int) -> int:
            value = obj.get(field, MISSING) if path is None else path(obj)
            if value is MISSING:
                raise PayloadError("missing_field", f"field {name!r} is missing: expected it in {where}")
            t: int = parse(value)
            current = int(now() * unit)
            if current - max_age <= t <= current + max_future:
                return t
            raise out_of_range(label, t, current, unit, max_age, max_future)

        return from_field


def parsed(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema parsed by fastavro (as given when it already is)."""
    if schema.get("__fastavro_parsed"):
        return schema
    result = fastavro.parse_schema(schema)
    if not isinstance(result, dict):
        raise SchemaError("a feed schema must be an Avro record")
    return result


# Schema checks, done once.


def _check_device_field(by_name: Mapping[str, Any], named: Mapping[str, Any], record: str) -> None:
    field = by_name.get(DEVICE_FIELD)
    if field is None:
        raise SchemaError(f"schema {record} has no {DEVICE_FIELD!r} field; every feed schema needs one (string)")
    if (
        avro_kind(named.get(field["type"], field["type"]) if isinstance(field["type"], str) else field["type"])
        != "string"
    ):
        raise SchemaError(f"schema {record}: field {DEVICE_FIELD!r} must be a string")


def _time_unit(by_name: Mapping[str, Any], named: Mapping[str, Any], record: str) -> int:
    field = by_name.get(TIME_FIELD)
    if field is None:
        raise SchemaError(f"schema {record} has no {TIME_FIELD!r} field; every feed schema needs one (timestamp)")
    avro_type = field["type"]
    if avro_kind(avro_type) != "long":
        raise SchemaError(f"schema {record}: field {TIME_FIELD!r} must be a long with logicalType timestamp-millis")
    logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
    return _TIME_UNITS.get(str(logical), 1_000)


def _refuse_zero_size_arrays(schema: Mapping[str, Any], named: Mapping[str, Any], record: str) -> None:
    """An array of items that take no bytes (null, empty records) lets a 10-byte body claim 2^63 items."""

    def zero_size(t: Any, seen: frozenset[str]) -> bool:
        t = named.get(t, t) if isinstance(t, str) else t
        kind = avro_kind(t)
        if kind == "null":
            return True
        if kind == "fixed":
            return int(t["size"]) == 0
        if kind in ("record", "error"):
            if t["name"] in seen:
                return False
            return all(zero_size(f["type"], seen | {t["name"]}) for f in t["fields"])
        return False

    def walk(t: Any, seen: frozenset[str]) -> None:
        t = named.get(t, t) if isinstance(t, str) else t
        if isinstance(t, list):
            for b in t:
                walk(b, seen)
            return
        kind = avro_kind(t)
        if kind == "array":
            if zero_size(t["items"], frozenset()):
                raise SchemaError(
                    f"schema {record}: an array of items that take no bytes cannot be read safely from device Avro "
                    "payloads (format avro)"
                )
            walk(t["items"], seen)
        elif kind == "map":
            walk(t["values"], seen)
        elif kind in ("record", "error") and t["name"] not in seen:
            for f in t["fields"]:
                walk(f["type"], seen | {t["name"]})

    walk(schema, frozenset())


# Messages.


def _label(name: str, source: str, text: bool) -> str:
    if source == name:
        return f"field {name!r}"
    return f"field {name!r} (from {'column ' if text else ''}{source!r})"


def _columns(columns: list[str]) -> str:
    shown = ", ".join(columns[:20])
    return shown + (", ..." if len(columns) > 20 else "")


def _bad_device_id(value: str, where: str) -> PayloadError:
    if not value:
        reason = "is empty"
    elif len(value) > MAX_DEVICE_ID:
        reason = f"is {len(value)} characters long; at most {MAX_DEVICE_ID} are allowed"
    else:
        bad = sorted({c for c in value if not _DEVICE_ID.fullmatch(c)})
        shown = ", ".join(repr(c) for c in bad[:5])
        reason = f"has characters outside A-Z a-z 0-9 _ . : - ({shown})"
    return PayloadError("bad_device_id", f"device id {clip(value)} ({where}) {reason}")
