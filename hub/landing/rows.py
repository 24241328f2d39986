"""Kafka records to table rows: pure, testable without servers.

A record is decoded with the schema it was written with (its id in the wire header)
and read through the feed's current schema, so older versions land in the current
table with new columns null or defaulted.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_reader

from hub.control.avro_schema import FeedSchema
from hub.errors import PayloadError
from hub.ingest.wire import decode_wire


@dataclass
class Rejected:
    topic: str
    offset: int
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str
    message: str


@dataclass
class FeedRows:
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)  # the Kafka record of each row, for dead letters
    rejected: list[Rejected] = field(default_factory=list)


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _received_at(header: bytes | None) -> datetime | None:
    """The ingest worker's `received_ms` header as a time; a missing or garbled one is no reason to refuse a row."""
    if not header:
        return None
    try:
        return datetime.fromtimestamp(int(header) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


# fastavro makes datetimes of these; anything outside refuses a row as out_of_range, as before.
_MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z, microseconds since the Unix epoch
_MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
# A timestamp column's value: (field name, microseconds per unit of the writer's long).
_TimeColumn = tuple[str, int]


def _time_columns(writer: FeedSchema, current: FeedSchema) -> tuple[_TimeColumn, ...]:
    """The fields read as epoch longs (the raw schemas) that fastavro would have made datetimes of.

    fastavro converts by the writer's logical type; the column must be a timestamptz one.
    """
    wanted = {c.name for c in current.columns if c.sql_type == "timestamptz"}
    return tuple((name, 1_000_000 // unit) for name, unit in writer.time_units.items() if name in wanted)


class RowBuilder:
    """Turns one feed's records into rows for its table, caching a reader per writer schema id.

    Timestamp fields come out as ints of microseconds since the Unix epoch (UTC), `received_at`
    as a datetime; both go to timestamptz columns through `hub.landing.writer.use_epoch_timestamps`.

    `columns` are the table's columns to fill (default: every column of the current schema);
    a schema field without a column is left out rather than failing the whole batch.
    """

    def __init__(
        self,
        current: FeedSchema,
        schema_lookup: Callable[[int], FeedSchema | None],
        columns: Iterable[str] | None = None,
    ) -> None:
        self.current = current
        self.lookup = schema_lookup
        wanted = None if columns is None else set(columns)
        self.columns = [c.name for c in current.columns if wanted is None or c.name in wanted]
        self._json_columns = {c.name for c in current.columns if c.sql_type == "jsonb"}
        self._writers: dict[int, tuple[dict[str, Any], dict[str, Any] | None, tuple[_TimeColumn, ...]]] = {}

    def writer(self, schema_id: int) -> dict[str, Any] | None:
        """The parsed writer schema of `schema_id` (None while it is unknown; not cached then)."""
        found = self._reader(schema_id)
        return None if found is None else found[0]

    def _reader(self, schema_id: int) -> tuple[dict[str, Any], dict[str, Any] | None, tuple[_TimeColumn, ...]] | None:
        """(writer schema, reader schema or None, timestamp fields) to read `schema_id`'s records with.

        Both schemas are the raw variants (timestamps as plain longs, see FeedSchema.parsed_raw):
        the fields listed become ints of microseconds since the Unix epoch, which the landing
        connections' timestamptz codec (`hub.landing.writer.use_epoch_timestamps`) sends as they
        are: much cheaper than a datetime per value.
        """
        found = self._writers.get(schema_id)
        if found is None:
            schema = self.lookup(schema_id)
            if schema is None:
                return None
            # The current version is read without schema resolution, which costs fastavro about
            # as much again per record.
            if schema.canonical == self.current.canonical:
                found = (self.current.parsed_raw, None, _time_columns(self.current, self.current))
            else:
                found = (schema.parsed_raw, self.current.parsed_raw, _time_columns(schema, self.current))
            self._writers[schema_id] = found
        return found

    def build(self, records: Iterable[Any]) -> FeedRows:
        out = FeedRows(columns=[*self.columns, "received_at"])
        jcols = self._json_columns
        columns = self.columns
        last_header: bytes | None = None
        last_received: datetime | None = None
        for r in records:
            try:
                schema_id, body = decode_wire(r.value or b"")
                found = self._reader(schema_id)
                if found is None:
                    raise PayloadError("unknown_schema", f"schema id {schema_id} is not in the registry")
                writer, reader, times = found
                try:
                    rec = schemaless_reader(io.BytesIO(body), writer, reader)
                except Exception as exc:
                    raise PayloadError(
                        "not_decodable", f"Avro body does not match schema id {schema_id}: {exc}"
                    ) from exc
                if not isinstance(rec, dict):
                    raise PayloadError("not_decodable", f"schema id {schema_id} does not describe a record")
                for name, scale in times:
                    value = rec.get(name)
                    if value is not None:
                        value *= scale
                        if not _MIN_US <= value <= _MAX_US:
                            raise ValueError(f"field {name!r}: {value} us since 1970 is outside years 1 to 9999")
                        rec[name] = value
                header = _header(r.headers, "received_ms")
                if header != last_header or last_header is None:
                    last_header, last_received = header, _received_at(header)
                values = [json.dumps(rec.get(c), default=str) if c in jcols else rec.get(c) for c in columns]
                row = (*values, last_received)
                out.rows.append(row)
                out.sources.append(r)
            except PayloadError as exc:
                out.rejected.append(rejected(r, exc.code, str(exc)))
            except (ValueError, OverflowError, OSError) as exc:
                out.rejected.append(rejected(r, "out_of_range", f"{type(exc).__name__}: {exc}"))
        return out


def rejected(record: Any, reason: str, message: str) -> Rejected:
    return Rejected(
        record.topic, record.offset, record.partition, record.key, record.value, list(record.headers), reason, message
    )
