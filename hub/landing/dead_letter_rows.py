"""Dead letters kept in the database: records of the dead-letter topic to rows of `hub.dead_letters`.

Landing consumes the dead-letter topic like a feed topic: its rows are written in the batch's
transaction, and only for partitions whose offsets that transaction moves, so each dead letter is
stored exactly once and a restart of the (memory-only) local broker loses none that was stored.
Ingest's hot path is not touched: it sends dead letters to Kafka as before.

What is kept: the refused message's own bytes (the MQTT payload, or for `stage` landing the Kafka
record landing could not use), the reason code and message, partner, feed, MQTT topic and the time
ingest received it. `prune` bounds the table by age and by count (settings `dead_letter_*`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from hub import dead_letters as names

COLUMNS = ("at", "partner_id", "feed", "reason", "message", "stage", "mqtt_topic", "payload")
UNKNOWN = "_unknown"

# (at, partner, feed, reason, message, stage, mqtt topic, payload), and the record's (topic, partition).
Row = tuple[datetime, str, str, str, str, str, str | None, bytes]


def _text(value: bytes | None) -> str | None:
    """Header text as PostgreSQL text can hold it (no NUL), whatever bytes a header carried."""
    if value is None:
        return None
    return value.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def dead_letter_row(record: Any, now: datetime) -> Row:
    """The row of one record of the dead-letter topic; never refuses one (a garbled header is kept as found)."""
    headers: dict[str, bytes] = {}
    for key, value in record.headers or ():
        headers.setdefault(key, value)  # the first of a name, as the writers put theirs first
    at = now
    received = headers.get(names.RECEIVED_MS)
    if received:
        try:
            at = datetime.fromtimestamp(int(received) / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            pass
    return (
        at,
        _text(headers.get(names.PARTNER)) or UNKNOWN,
        _text(headers.get(names.FEED)) or UNKNOWN,
        _text(headers.get(names.REASON)) or "unknown",
        _text(headers.get(names.MESSAGE)) or "",
        _text(headers.get(names.STAGE)) or "ingest",
        _text(headers.get(names.MQTT_TOPIC)),
        bytes(record.value or b""),
    )


async def store(conn: asyncpg.Connection, rows: Iterable[Row]) -> int:
    """Write dead-letter rows (inside the caller's transaction); returns how many."""
    batch = list(rows)
    if batch:
        await conn.copy_records_to_table("dead_letters", schema_name="hub", records=batch, columns=COLUMNS)
    return len(batch)


async def prune(conn: asyncpg.Connection, retention: timedelta, max_rows: int) -> int:
    """Delete dead letters older than `retention`, then the oldest beyond `max_rows`; returns how many went."""
    status = await conn.execute("DELETE FROM hub.dead_letters WHERE at < now() - $1::interval", retention)
    removed = int(status.split()[-1])
    status = await conn.execute(
        """DELETE FROM hub.dead_letters WHERE id <= (
               SELECT id FROM hub.dead_letters ORDER BY id DESC OFFSET $1 LIMIT 1)""",
        max_rows,
    )
    return removed + int(status.split()[-1])
