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
from operator import itemgetter
from typing import Any, NamedTuple

from fastavro import schemaless_reader

from hub.dead_letters import RECEIVED_MS
from hub.errors import PayloadError
from hub.schema.avro import FeedSchema
from hub.schema.fast_read import Read, ReadArgs, fast_reader
from hub.schema.timestamps import MAX_EPOCH_US, MIN_EPOCH_US
from hub.schema.wire import HEADER_SIZE, decode_wire


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


def _received_at(header: bytes | None) -> datetime | None:
    """The ingest worker's `received_ms` header as a time; a missing or garbled one is no reason to refuse a row."""
    if not header:
        return None
    try:
        return datetime.fromtimestamp(int(header) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


# A timestamp column's value: (field name, microseconds per unit of the writer's long).
_TimeColumn = tuple[str, int]


def _time_columns(writer: FeedSchema, current: FeedSchema) -> tuple[_TimeColumn, ...]:
    """The fields read as epoch longs (the raw schemas) that fastavro would have made datetimes of.

    fastavro converts by the writer's logical type; the column must be a timestamptz one.
    """
    wanted = {c.name for c in current.columns if c.sql_type == "timestamptz"}
    return tuple((name, 1_000_000 // unit) for name, unit in writer.time_units.items() if name in wanted)


class _Plan(NamedTuple):
    """What `RowBuilder.build` needs for each record of one writer schema id, worked out once."""

    schema_id: int
    writer: dict[str, Any]  # the parsed raw writer schema
    reader: dict[str, Any] | None  # the parsed raw reader schema, None for the current version
    times: tuple[_TimeColumn, ...]
    # The row but received_at, from a decoded record, when every column is a field of the schema it
    # is read with (fastavro's records have them all, defaulted or not); None: rec.get per column.
    values: Callable[[dict[str, Any]], tuple[Any, ...]] | None
    json_columns: tuple[str, ...]  # jsonb columns of the row, rendered into the record before `values`
    # `read(fo, *read_args)` reads what `schemaless_reader(fo, writer, reader)` reads: see fast_reader.
    read: Read
    read_args: ReadArgs


# json.dumps(value, default=str) without making an encoder per call: same settings, same text.
_to_json = json.JSONEncoder(default=str).encode


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
        # By a value's first 5 bytes (magic byte 0 and the schema id): one dict lookup per record.
        self._plans: dict[bytes, _Plan] = {}

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

    def _plan(self, value: bytes) -> _Plan:
        """The plan for a value whose first 5 bytes are no known schema id's header (yet).

        Raises PayloadError as `decode_wire` does for a value not in the wire format, and
        `unknown_schema` for an id the registry lacks (looked up again for the next record).
        """
        schema_id, _ = decode_wire(value)
        found = self._reader(schema_id)
        if found is None:
            raise PayloadError("unknown_schema", f"schema id {schema_id} is not in the registry")
        writer, reader, times = found
        fields = {f["name"] for f in (reader or writer).get("fields", ())}
        columns = self.columns
        values = itemgetter(*columns) if len(columns) > 1 and fields.issuperset(columns) else None
        json_columns = tuple(c for c in columns if c in self._json_columns)
        plan = _Plan(schema_id, writer, reader, times, values, json_columns, *fast_reader(writer, reader))
        self._plans[bytes(value[:HEADER_SIZE])] = plan
        return plan

    def build(self, records: Iterable[Any]) -> FeedRows:
        # The landing worker's hottest loop: names are local, and per schema id all is in its _Plan.
        columns = self.columns
        out = FeedRows(columns=[*columns, "received_at"])
        add_row = out.rows.append
        add_source = out.sources.append
        add_rejected = out.rejected.append
        plans = self._plans
        jcols = self._json_columns
        buffer = io.BytesIO
        to_json = _to_json
        header_size = HEADER_SIZE
        min_us, max_us = MIN_EPOCH_US, MAX_EPOCH_US  # what fastavro would make datetimes of
        last_header: bytes | None = None
        last_received: datetime | None = None
        for r in records:
            try:
                value = r.value or b""
                try:
                    plan = plans[value[:header_size]]
                except (KeyError, TypeError):  # a new schema id, not the wire format, or not bytes
                    plan = self._plan(value)
                schema_id, writer, reader, times, values, json_columns, read, (w, named, rd, options) = plan
                body = buffer(value)  # shares value's bytes, unlike decode_wire's body
                body.seek(header_size)
                try:
                    rec = read(body, w, named, rd, options)
                except Exception:
                    rec = _decode(value, schema_id, writer, reader)
                if not isinstance(rec, dict):
                    raise PayloadError("not_decodable", f"schema id {schema_id} does not describe a record")
                for name, scale in times:
                    t = rec.get(name)
                    if t is not None:
                        t *= scale
                        if not min_us <= t <= max_us:
                            raise ValueError(f"field {name!r}: {t} us since 1970 is outside years 1 to 9999")
                        rec[name] = t
                header = None
                for k, v in r.headers:  # the first received_ms header, if any
                    if k == RECEIVED_MS:
                        header = v
                        break
                if header != last_header or last_header is None:
                    last_header, last_received = header, _received_at(header)
                if values is not None:
                    for c in json_columns:
                        rec[c] = to_json(rec[c])
                    add_row(values(rec) + (last_received,))  # noqa: RUF005 - faster than (*values(rec), ...)
                else:
                    add_row((*[to_json(rec.get(c)) if c in jcols else rec.get(c) for c in columns], last_received))
                add_source(r)
            except PayloadError as exc:
                add_rejected(rejected(r, exc.code, str(exc)))
            except (ValueError, OverflowError, OSError) as exc:
                add_rejected(rejected(r, "out_of_range", f"{type(exc).__name__}: {exc}"))
        return out


def _decode(value: bytes, schema_id: int, writer: dict[str, Any], reader: dict[str, Any] | None) -> Any:
    """A body the fast read refused, read as it always was: the record, or PayloadError('not_decodable')."""
    try:
        return schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), writer, reader)
    except Exception as exc:
        raise PayloadError("not_decodable", f"Avro body does not match schema id {schema_id}: {exc}") from exc


def rejected(record: Any, reason: str, message: str) -> Rejected:
    return Rejected(
        record.topic, record.offset, record.partition, record.key, record.value, list(record.headers), reason, message
    )
