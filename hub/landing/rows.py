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


class RowBuilder:
    """Turns one feed's records into rows for its table, caching a reader per writer schema id."""

    def __init__(self, current: FeedSchema, schema_lookup: Callable[[int], FeedSchema | None]) -> None:
        self.current = current
        self.lookup = schema_lookup
        self.columns = [c.name for c in current.columns]
        self._json_columns = {c.name for c in current.columns if c.sql_type == "jsonb"}
        self._writers: dict[int, dict[str, Any] | None] = {}

    def writer(self, schema_id: int) -> dict[str, Any] | None:
        if schema_id not in self._writers:
            found = self.lookup(schema_id)
            self._writers[schema_id] = found.parsed if found else None
        return self._writers[schema_id]

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
                    rec = schemaless_reader(io.BytesIO(body), writer, reader)
                except Exception as exc:
                    raise PayloadError(
                        "not_decodable", f"Avro body does not match schema id {schema_id}: {exc}"
                    ) from exc
                assert isinstance(rec, dict)
                received = _header(r.headers, "received_ms")
                received_at = datetime.fromtimestamp(int(received) / 1000, UTC) if received else None
                values = [json.dumps(rec.get(c), default=str) if c in jcols else rec.get(c) for c in self.columns]
                row = (*values, received_at)
                out.rows.append(row)
                out.sources.append(r)
            except PayloadError as exc:
                out.rejected.append(rejected(r, exc.code, str(exc)))
            except (ValueError, OverflowError) as exc:
                out.rejected.append(rejected(r, "out_of_range", str(exc)))
        return out


def rejected(record: Any, reason: str, message: str) -> Rejected:
    return Rejected(record.offset, record.partition, record.key, record.value, list(record.headers), reason, message)
