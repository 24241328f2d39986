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
`time.timezone`; every other schema field from `payload[feed.mapping(field).source]`, with
`value * scale + offset` applied to numbers when the mapping gives a conversion (an int target
is then rounded to the nearest integer). A field missing from the payload takes its schema
default when it declares one (null for `["null", X]` with default null), else is `missing_field`.

Error codes (`PayloadError.code`). They are part of the hub's public contract: they go into
dead-letter headers and error reports, so existing codes never change meaning.
- `too_large`: the payload is longer than `max_payload_bytes`.
- `not_decodable`: not UTF-8, not a JSON object, a CSV line with the wrong number of columns,
  or not an Avro body of the feed's schema; the message says what was expected.
- `header_line`: (csv with `csv.header: true`) the line equals the header; the caller should
  skip it, it is not an error of the device.
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
"""

from __future__ import annotations

import copy
import csv
import io
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

import fastavro
import orjson

from hub.control.connector import Feed, PayloadFormat, TimeFormat
from hub.errors import ConfigError, PayloadError, SchemaError

Converter = Callable[[Any], Any]
DeviceReader = Callable[[Mapping[str, Any], str | None], str]
TimeReader = Callable[[Mapping[str, Any], int], int]

DEVICE_FIELD: Final = "device_id"
TIME_FIELD: Final = "time"
MAX_DEVICE_ID: Final = 128

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
LONG_MIN: Final = -(2**63)
LONG_MAX: Final = 2**63 - 1
FLOAT32_MAX: Final = 3.4028234663852886e38
FLOAT64_MAX: Final = 1.7976931348623157e308

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_FIELD_LABEL = re.compile(r"^field '([^']*)'")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_UNITS: Final = {"timestamp-millis": 1_000, "timestamp-micros": 1_000_000}
_EPOCH_UNITS: Final = {TimeFormat.epoch_s: 1, TimeFormat.epoch_ms: 1_000, TimeFormat.epoch_us: 1_000_000}
_PLAIN_TIMESTAMPS: Final = frozenset(
    {"timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"}
)
_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False}
_NUMERIC: Final = frozenset({"int", "long", "float", "double"})
# Keeps now +/- max_age/max_future inside a signed 64-bit long for the next ~146,000 years.
_MAX_WINDOW: Final = 2**62


class _Missing:
    """The sentinel for a field absent from the payload."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


class FeedDecoder:
    """Decodes the messages of one feed into records of one schema version. Not shared between threads."""

    def __init__(
        self,
        feed: Feed,
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
        builder = _Builder(named, text=text)
        columns = feed.csv.columns if feed.csv is not None else []
        plan: list[tuple[str, str, Converter]] = []
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
            plan.append((name, source, conv))
        self._plan: tuple[tuple[str, str, Converter], ...] = tuple(plan)
        self._device: DeviceReader = self._device_reader()
        self._time: TimeReader = self._time_reader()

        self._csv_columns = list(columns)
        self._csv_delimiter = feed.csv.delimiter if feed.csv is not None else ","
        self._csv_header = feed.csv.header if feed.csv is not None else False
        self._reader_schema: dict[str, Any] = {}
        if feed.format == PayloadFormat.avro:
            _refuse_zero_size_arrays(parsed_schema, named, record_name)
            # Timestamps read as plain longs: faster, and what the rest of the decoder works with.
            self._reader_schema = parsed(_without_timestamp_types(parsed_schema))
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
                    "not_decodable", f"payload is {_found(obj)} in JSON, but format json expects one object {{...}}"
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
            record[name] = conv(obj.get(source, _MISSING))
        return record

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

        field = source.field or DEVICE_FIELD
        where = f"payload field {field!r}" if self._format is not PayloadFormat.csv else f"column {field!r}"

        def from_field(obj: Mapping[str, Any], topic: str | None) -> str:
            value = obj.get(field, _MISSING)
            if type(value) is str:
                if fullmatch(value):
                    return value
                raise _bad_device_id(value, where)
            if type(value) is int:
                text = str(value)
                if fullmatch(text):
                    return text
                raise _bad_device_id(text, where)
            if value is _MISSING:
                raise PayloadError("missing_field", f"field {DEVICE_FIELD!r} is missing: expected it in {where}")
            raise PayloadError(
                "bad_device_id", f"device id ({where}): expected a string or an integer, got {_found(value)}"
            )

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

        field = cfg.field or TIME_FIELD
        if self._format is PayloadFormat.avro:
            label = f"field {field!r}"
        else:
            label = f"field {TIME_FIELD!r}" + ("" if field == TIME_FIELD else f" (from {field!r})")
        if self._format is PayloadFormat.avro and field == TIME_FIELD:
            parse = _plain_time(label, unit)
        else:
            parse = _time_parser(cfg.format, ZoneInfo(cfg.timezone) if cfg.timezone != "UTC" else UTC, unit, label)
        where = f"column {field!r}" if self._format is PayloadFormat.csv else f"payload field {field!r}"
        max_age = min(cfg.max_age // timedelta(microseconds=1_000_000 // unit), _MAX_WINDOW)
        max_future = min(cfg.max_future // timedelta(microseconds=1_000_000 // unit), _MAX_WINDOW)
        now = self._now

        def from_field(obj: Mapping[str, Any], received_at_ms: int) -> int:
            value = obj.get(field, _MISSING)
            if value is _MISSING:
                raise PayloadError("missing_field", f"field {TIME_FIELD!r} is missing: expected it in {where}")
            t: int = parse(value)
            current = int(now() * unit)
            if current - max_age <= t <= current + max_future:
                return t
            raise _out_of_range(label, t, current, unit, max_age, max_future)

        return from_field


def parsed(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema parsed by fastavro (as given when it already is)."""
    if schema.get("__fastavro_parsed"):
        return schema
    result = fastavro.parse_schema(schema)
    if not isinstance(result, dict):
        raise SchemaError("a feed schema must be an Avro record")
    return result


# Converters: one closure per field, built once. The fast path checks the exact type and returns;
# everything else (missing, null, empty CSV value, wrong type) goes to the field's `fallback`.


class _Builder:
    def __init__(self, named: Mapping[str, Any], *, text: bool) -> None:
        self.named = named
        self.text = text
        self._records: tuple[str, ...] = ()

    def resolve(self, avro_type: Any) -> Any:
        if isinstance(avro_type, str) and avro_type in self.named:
            return self.named[avro_type]
        return avro_type

    def field(
        self,
        avro_type: Any,
        label: str,
        missing: str,
        *,
        has_default: bool,
        default: Any,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> Converter:
        avro_type = self.resolve(avro_type)
        branches = [self.resolve(b) for b in avro_type] if isinstance(avro_type, list) else [avro_type]
        nullable = any(_kind(b) == "null" for b in branches)
        branches = [b for b in branches if _kind(b) != "null"]
        if has_default and isinstance(default, str) and branches and _kind(branches[0]) in ("bytes", "fixed"):
            default = default.encode("latin-1")  # Avro JSON defaults for bytes are code points 0-255
        expected = " or ".join(_expected(b) for b in branches) if branches else "null"
        if nullable and branches:
            expected += " or null"
        fallback = _fallback(label, expected, missing, nullable, has_default, default, self.text)
        if not branches:
            return fallback
        if len(branches) == 1:
            return self.single(branches[0], label, fallback, nullable, scale, offset)
        strict = _fallback(label, expected, missing, False, False, None, self.text)
        convs = tuple(self.single(b, label, strict, False, scale, offset) for b in branches)
        text = self.text

        def union(value: Any) -> Any:
            if value is _MISSING or (value is None and nullable) or (text and nullable and value == ""):
                return fallback(value)
            for conv in convs:
                try:
                    return conv(value)
                except PayloadError:
                    continue
            return fallback(value)

        return union

    def single(
        self, avro_type: Any, label: str, fallback: Converter, nullable: bool, scale: float, offset: float
    ) -> Converter:
        kind = _kind(avro_type)
        scaled = scale != 1.0 or offset != 0.0
        if scaled and kind not in _NUMERIC:
            return _conversion_on_non_number(label, kind, scale, offset, fallback)
        text = self.text
        if kind in ("int", "long"):
            lo, hi = (INT_MIN, INT_MAX) if kind == "int" else (LONG_MIN, LONG_MAX)
            return _integer(kind, lo, hi, label, fallback, text, scale, offset)
        if kind in ("float", "double"):
            return _floating(kind, label, fallback, text, scale, offset)
        if kind == "string":
            return _string(label, fallback, text, nullable)
        if kind == "boolean":
            return _boolean(fallback, text)
        if kind == "enum":
            return _enum(frozenset(avro_type["symbols"]), fallback)
        if kind == "bytes":
            return _bytes(fallback, None, text)
        if kind == "fixed":
            return _bytes(fallback, int(avro_type["size"]), text)
        if text:  # arrays, maps and records have no CSV text form
            return fallback
        if kind == "array":
            return self._array(avro_type, label, fallback)
        if kind == "map":
            return self._map(avro_type, label, fallback)
        if kind in ("record", "error"):
            return self._record(avro_type, label, fallback)
        raise SchemaError(f"{label}: Avro type {kind!r} is not supported by the ingest decoder")

    def _array(self, avro_type: Mapping[str, Any], label: str, fallback: Converter) -> Converter:
        item = self.field(avro_type["items"], f"{label}, an item", "", has_default=False, default=None)

        def array(value: Any) -> Any:
            if type(value) is list:
                return [item(v) for v in value]
            return fallback(value)

        return array

    def _map(self, avro_type: Mapping[str, Any], label: str, fallback: Converter) -> Converter:
        item = self.field(avro_type["values"], f"{label}, a value", "", has_default=False, default=None)

        def avro_map(value: Any) -> Any:
            if type(value) is dict:
                return {k: item(v) for k, v in value.items()}
            return fallback(value)

        return avro_map

    def _record(self, avro_type: Mapping[str, Any], label: str, fallback: Converter) -> Converter:
        name = avro_type["name"]
        if name in self._records:
            raise SchemaError(f"{label}: recursive record {name} is not supported by the ingest decoder")
        self._records = (*self._records, name)
        try:
            subs = []
            for f in avro_type["fields"]:
                # "field 'pos' (from 'position')" -> "field 'pos.lat' (from 'position')"
                match = _FIELD_LABEL.match(label)
                sub = f"field '{match.group(1)}.{f['name']}'{label[match.end() :]}" if match else label
                conv = self.field(
                    f["type"], sub, f"{sub} is missing", has_default="default" in f, default=f.get("default")
                )
                subs.append((f["name"], conv))
        finally:
            self._records = self._records[:-1]

        def record(value: Any) -> Any:
            if type(value) is dict:
                return {n: conv(value.get(n, _MISSING)) for n, conv in subs}
            return fallback(value)

        return record


def _fallback(
    label: str, expected: str, missing: str, nullable: bool, has_default: bool, default: Any, text: bool
) -> Converter:
    fresh = isinstance(default, list | dict)

    def fallback(value: Any) -> Any:
        if value is _MISSING:
            if has_default:
                return copy.deepcopy(default) if fresh else default
            raise PayloadError("missing_field", missing)
        if value is None and nullable:
            return None
        if text and value == "":
            if nullable:
                return None
            if has_default:
                return copy.deepcopy(default) if fresh else default
            raise PayloadError("missing_field", missing)
        raise PayloadError("wrong_type", f"{label}: expected {expected}, got {_found(value)}")

    return fallback


def _integer(
    kind: str, lo: int, hi: int, label: str, fallback: Converter, text: bool, scale: float, offset: float
) -> Converter:
    def out_of_range(value: Any) -> PayloadError:
        return PayloadError(
            "wrong_type", f"{label}: expected an integer from {lo} to {hi} (Avro {kind}), got {_found(value)}"
        )

    if scale != 1.0 or offset != 0.0:

        def to_integer(result: float) -> int:
            if result - result != 0.0:  # NaN or infinite
                raise out_of_range(result)
            i = round(result)
            if lo <= i <= hi:
                return i
            raise out_of_range(i)

        return _scaled(text, scale, offset, fallback, out_of_range, to_integer)

    if text:

        def from_text(value: Any) -> Any:
            try:
                i = int(value)
            except (TypeError, ValueError):
                try:
                    f = float(value)
                except (TypeError, ValueError):
                    return fallback(value)
                if not f.is_integer():
                    return fallback(value)
                i = int(f)
            if lo <= i <= hi:
                return i
            raise out_of_range(i)

        return from_text

    def native(value: Any) -> Any:
        if type(value) is int:
            if lo <= value <= hi:
                return value
            raise out_of_range(value)
        if type(value) is float and value.is_integer():
            i = int(value)
            if lo <= i <= hi:
                return i
            raise out_of_range(value)
        return fallback(value)

    return native


def _floating(kind: str, label: str, fallback: Converter, text: bool, scale: float, offset: float) -> Converter:
    limit = FLOAT32_MAX if kind == "float" else FLOAT64_MAX

    def out_of_range(value: Any) -> PayloadError:
        return PayloadError(
            "wrong_type", f"{label}: expected a finite number within +/-{limit:.7g} (Avro {kind}), got {_found(value)}"
        )

    if scale != 1.0 or offset != 0.0:

        def to_float(result: float) -> float:
            if -limit <= result <= limit:
                return float(result)
            raise out_of_range(result)

        return _scaled(text, scale, offset, fallback, out_of_range, to_float)

    if text:

        def from_text(value: Any) -> Any:
            try:
                f = float(value)
            except (TypeError, ValueError):
                return fallback(value)
            if -limit <= f <= limit:
                return f
            raise out_of_range(f)

        return from_text

    def native(value: Any) -> Any:
        if type(value) is float:
            if -limit <= value <= limit:  # false for NaN and infinities
                return value
            raise out_of_range(value)
        if type(value) is int:
            if -limit <= value <= limit:
                return float(value)
            raise out_of_range(value)
        return fallback(value)

    return native


def _scaled(
    text: bool,
    scale: float,
    offset: float,
    fallback: Converter,
    out_of_range: Callable[[Any], PayloadError],
    finish: Callable[[float], Any],
) -> Converter:
    """A numeric converter with the config's unit conversion (`value * scale + offset`) applied first."""
    number = _text_number if text else _native_number

    def scaled(value: Any) -> Any:
        n = number(value)
        if n is None:
            return fallback(value)
        try:
            result = n * scale + offset
        except OverflowError:  # a huge int times a float
            raise out_of_range(n) from None
        return finish(result)

    return scaled


def _native_number(value: Any) -> int | float | None:
    return value if type(value) is int or type(value) is float else None


def _text_number(value: Any) -> int | float | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _string(label: str, fallback: Converter, text: bool, nullable: bool) -> Converter:
    def nul(value: str) -> PayloadError:
        return PayloadError(
            "wrong_type", f"{label}: the string {_clip(value)} contains a NUL character, which cannot be stored"
        )

    if text and nullable:

        def text_or_null(value: Any) -> Any:
            if type(value) is str and value:
                if "\x00" in value:
                    raise nul(value)
                return value
            return fallback(value)

        return text_or_null

    def string(value: Any) -> Any:
        if type(value) is str:
            if "\x00" in value:
                raise nul(value)
            return value
        return fallback(value)

    return string


def _boolean(fallback: Converter, text: bool) -> Converter:
    if text:

        def from_text(value: Any) -> Any:
            found = _BOOLEANS.get(value.strip().lower()) if type(value) is str else None
            return found if found is not None else fallback(value)

        return from_text

    def native(value: Any) -> Any:
        if value is True or value is False:
            return value
        return fallback(value)

    return native


def _enum(symbols: frozenset[str], fallback: Converter) -> Converter:
    def enum(value: Any) -> Any:
        if type(value) is str and value in symbols:
            return value
        return fallback(value)

    return enum


def _bytes(fallback: Converter, size: int | None, text: bool) -> Converter:
    """bytes as they are; a string is taken as its UTF-8 encoding."""

    def to_bytes(value: Any) -> Any:
        if type(value) is bytes:
            data = value
        elif type(value) is str and (value or not text):
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                return fallback(value)
        else:
            return fallback(value)
        if size is None or len(data) == size:
            return data
        return fallback(value)

    return to_bytes


def _conversion_on_non_number(label: str, kind: str, scale: float, offset: float, fallback: Converter) -> Converter:
    def refuse(value: Any) -> Any:
        if value is _MISSING or value is None:
            return fallback(value)
        raise PayloadError(
            "wrong_type",
            f"{label}: the connector config converts units (scale {scale:g}, offset {offset:g}), but the field's "
            f"Avro type is {kind}, not a number: remove scale/offset for this field",
        )

    return refuse


# Time parsers: value -> int in the schema's unit, or PayloadError('bad_time').


def _time_parser(fmt: TimeFormat | str, zone: tzinfo, unit: int, label: str) -> Converter:
    if fmt in _EPOCH_UNITS:
        return _epoch_parser(_EPOCH_UNITS[TimeFormat(fmt)], unit, label, fmt)
    step = timedelta(microseconds=1_000_000 // unit)
    if fmt == TimeFormat.iso8601:
        expected = "an ISO 8601 time such as '2026-11-23T10:15:30Z' (time.format iso8601)"
        fromisoformat = datetime.fromisoformat

        def iso(value: Any) -> int:
            if type(value) is str:
                try:
                    dt = fromisoformat(value)
                except ValueError:
                    pass
                else:
                    if dt.tzinfo is None:
                        dt = dt.replace(tzinfo=zone)
                    return (dt - _EPOCH) // step
            raise PayloadError("bad_time", f"{label}: expected {expected}, got {_found(value)}")

        return iso

    pattern = str(fmt)
    expected = f"a time in the format {pattern!r} (time.format)"
    strptime = datetime.strptime

    def strftime(value: Any) -> int:
        if type(value) is str:
            try:
                dt = strptime(value, pattern)
            except ValueError:
                pass
            else:
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=zone)
                return (dt - _EPOCH) // step
        raise PayloadError("bad_time", f"{label}: expected {expected}, got {_found(value)}")

    return strftime


def _epoch_parser(per_second: int, unit: int, label: str, fmt: str) -> Converter:
    names = {1: "seconds", 1_000: "milliseconds", 1_000_000: "microseconds"}
    expected = f"{names[per_second]} since 1970-01-01 UTC as a number (time.format {fmt})"
    multiply = unit // per_second if unit >= per_second else 1
    divide = per_second // unit if per_second > unit else 1

    def bad(value: Any) -> PayloadError:
        return PayloadError("bad_time", f"{label}: expected {expected}, got {_found(value)}")

    def epoch(value: Any) -> int:
        kind = type(value)
        if kind is str:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise bad(value) from None
            kind = type(value)
        result: int
        if kind is int:
            result = value * multiply // divide
            return result
        if kind is float:
            try:
                result = round(value * multiply / divide)
                return result
            except (OverflowError, ValueError):  # infinities and NaN
                raise bad(value) from None
        raise bad(value)

    return epoch


def _plain_time(label: str, unit: int) -> Converter:
    def plain(value: Any) -> int:
        if type(value) is int:
            return value
        raise PayloadError(
            "bad_time",
            f"{label}: expected {'milli' if unit == 1000 else 'micro'}seconds since 1970, got {_found(value)}",
        )

    return plain


def _out_of_range(label: str, t: int, current: int, unit: int, max_age: int, max_future: int) -> PayloadError:
    when = _iso(t, unit)
    if t < current:
        age = current - t
        return PayloadError(
            "time_out_of_range",
            f"{label}: {when} is {_duration(age, unit)} old, {_duration(age - max_age, unit)} more than this feed "
            f"accepts (time.max_age {_duration(max_age, unit)})",
        )
    ahead = t - current
    return PayloadError(
        "time_out_of_range",
        f"{label}: {when} is {_duration(ahead, unit)} in the future, {_duration(ahead - max_future, unit)} more than "
        f"this feed accepts (time.max_future {_duration(max_future, unit)}); check the device clock",
    )


# Schema checks, done once.


def _check_device_field(by_name: Mapping[str, Any], named: Mapping[str, Any], record: str) -> None:
    field = by_name.get(DEVICE_FIELD)
    if field is None:
        raise SchemaError(f"schema {record} has no {DEVICE_FIELD!r} field; every feed schema needs one (string)")
    if _kind(named.get(field["type"], field["type"]) if isinstance(field["type"], str) else field["type"]) != "string":
        raise SchemaError(f"schema {record}: field {DEVICE_FIELD!r} must be a string")


def _time_unit(by_name: Mapping[str, Any], named: Mapping[str, Any], record: str) -> int:
    field = by_name.get(TIME_FIELD)
    if field is None:
        raise SchemaError(f"schema {record} has no {TIME_FIELD!r} field; every feed schema needs one (timestamp)")
    avro_type = field["type"]
    if _kind(avro_type) != "long":
        raise SchemaError(f"schema {record}: field {TIME_FIELD!r} must be a long with logicalType timestamp-millis")
    logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
    return _TIME_UNITS.get(str(logical), 1_000)


def _refuse_zero_size_arrays(schema: Mapping[str, Any], named: Mapping[str, Any], record: str) -> None:
    """An array of items that take no bytes (null, empty records) lets a 10-byte body claim 2^63 items."""

    def zero_size(t: Any, seen: frozenset[str]) -> bool:
        t = named.get(t, t) if isinstance(t, str) else t
        kind = _kind(t)
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
        kind = _kind(t)
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


def _without_timestamp_types(schema: Any) -> Any:
    """A plain copy of a parsed schema whose timestamp logical types are dropped (read as longs)."""
    if isinstance(schema, dict):
        out = {k: _without_timestamp_types(v) for k, v in schema.items() if not k.startswith("__")}
        if out.get("logicalType") in _PLAIN_TIMESTAMPS:
            del out["logicalType"]
        return out
    if isinstance(schema, list):
        return [_without_timestamp_types(v) for v in schema]
    return schema


def _kind(avro_type: Any) -> str:
    """The Avro type name of a resolved type: 'int', 'string', 'enum', 'array', 'union', ..."""
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, list):
        return "union"
    inner = avro_type.get("type")
    return inner if isinstance(inner, str) else _kind(inner)


# Messages.


def _label(name: str, source: str, text: bool) -> str:
    if source == name:
        return f"field {name!r}"
    return f"field {name!r} (from {'column ' if text else ''}{source!r})"


def _expected(avro_type: Any) -> str:
    kind = _kind(avro_type)
    if kind in ("int", "long"):
        return f"an integer (Avro {kind})"
    if kind in ("float", "double"):
        return f"a number (Avro {kind})"
    if kind == "boolean":
        return "true or false (Avro boolean)"
    if kind == "string":
        return "a string (Avro string)"
    if kind == "bytes":
        return "a string (Avro bytes)"
    if kind == "enum":
        symbols = ", ".join(repr(s) for s in avro_type["symbols"][:12])
        return f"one of {symbols}{', ...' if len(avro_type['symbols']) > 12 else ''} (Avro enum)"
    if kind == "fixed":
        return f"a string of {avro_type['size']} bytes (Avro fixed)"
    if kind == "array":
        return "an array (Avro array)"
    if kind == "map":
        return "an object (Avro map)"
    if kind in ("record", "error"):
        return "an object (Avro record)"
    return f"Avro {kind}"


def _found(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        text = repr(value)
        return f"the number {text if len(text) <= 40 else text[:40] + '...'}"
    if isinstance(value, str):
        return "an empty string" if not value else f"the string {_clip(value)}"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _clip(value: str, limit: int = 40) -> str:
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."


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
    return PayloadError("bad_device_id", f"device id {_clip(value)} ({where}) {reason}")


def _iso(t: int, unit: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=t * (1_000_000 // unit))).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{t} {'ms' if unit == 1000 else 'us'} since 1970"


def _duration(amount: int, unit: int) -> str:
    """'2 days 3 hours', '5 minutes 2 seconds', '250 ms': the two largest parts."""
    if amount < unit:
        ms = amount * 1000 // unit
        return f"{ms} ms"
    seconds = amount // unit
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2])
