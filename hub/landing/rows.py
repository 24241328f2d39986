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


class RowBuilder:
    """Turns one feed's records into rows for its table, caching a reader per writer schema id.

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
        self._writers: dict[int, dict[str, Any]] = {}

    def writer(self, schema_id: int) -> dict[str, Any] | None:
        """The parsed writer schema of `schema_id` (None while it is unknown; not cached then)."""
        found = self._writers.get(schema_id)
        if found is None:
            schema = self.lookup(schema_id)
            if schema is None:
                return None
            # The current version is read without schema resolution, which costs fastavro about
            # as much again per record.
            parsed = self.current.parsed if schema.canonical == self.current.canonical else schema.parsed
            found = self._writers[schema_id] = parsed
        return found

    def build(self, records: Iterable[Any]) -> FeedRows:
        out = FeedRows(columns=[*self.columns, "received_at"])
        reader = self.current.parsed
        jcols = self._json_columns
        for r in records:
            try:
                schema_id, body = decode_wire(r.value or b"")
                writer = self.writer(schema_id)
                if writer is None:
                    raise PayloadError("unknown_schema", f"schema id {schema_id} is not in the registry")
                try:
                    rec = schemaless_reader(io.BytesIO(body), writer, None if writer is reader else reader)
                except Exception as exc:
                    raise PayloadError(
                        "not_decodable", f"Avro body does not match schema id {schema_id}: {exc}"
                    ) from exc
                if not isinstance(rec, dict):
                    raise PayloadError("not_decodable", f"schema id {schema_id} does not describe a record")
                received_at = _received_at(_header(r.headers, "received_ms"))
                values = [json.dumps(rec.get(c), default=str) if c in jcols else rec.get(c) for c in self.columns]
                row = (*values, received_at)
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
