"""An aggregate stream's closed windows, read from its consumer's aggregate view and sent (the rules: windows.py).

One worker at a time emits a stream's windows: its row of `hub.share_windows` (the last window emitted)
is locked while it does, and moved on only once Kafka and the MQTT broker acknowledged every window;
the caller's transaction then stores it with the stream's counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from hub.agreement import names
from hub.agreement.streams import Stream
from hub.identifiers import qualified
from hub.schema.wire import WireEncoder
from hub.share import memory, store, windows
from hub.share import metrics as share_metrics
from hub.share.outputs import KafkaOut, MqttOut
from hub.share.projection import aggregate_json, aggregate_record, iso_ms


@dataclass(frozen=True)
class Outputs:
    """Where a stream's windows go: the worker's connections (idle: no batch of records is in flight on them)."""

    kafka: KafkaOut
    mqtt: MqttOut
    encoder: WireEncoder | None  # the stream's share topic's (Kafka delivery)
    local: bool  # the local broker: hold the share topic against recreation while sending (memory.py)


@dataclass(frozen=True)
class Emitted:
    windows: int  # windows that closed and were emitted (a window the k-devices rule suppresses has no row)
    records: int  # rows sent


NOTHING = Emitted(0, 0)


async def emit_due_windows(
    conn: asyncpg.Connection, x: Stream, feed_topic: str, grace: timedelta, backfill: int, out: Outputs
) -> Emitted:
    """Emit stream `x`'s windows that closed since the last one emitted, once landing caught up with the feed."""
    c = x.clause
    assert c.bucket is not None
    now = datetime.now(UTC)
    start = windows.newest_closed(now, c.bucket, c.delay, grace) - backfill * c.bucket
    await conn.execute(
        "INSERT INTO hub.share_windows (stream, last_window) VALUES ($1, $2) ON CONFLICT DO NOTHING", x.id, start
    )
    last = await conn.fetchval(
        "SELECT last_window FROM hub.share_windows WHERE stream = $1 FOR UPDATE SKIP LOCKED", x.id
    )
    if last is None:
        return NOTHING  # another worker is emitting this stream's windows
    due = windows.due(last, now, c.bucket, c.delay, grace)
    if not due or not await store.landing_caught_up(conn, feed_topic):
        return NOTHING
    view = qualified(names.org_schema(x.org), names.view_name(c.provider, c.feed, True))
    rows = await conn.fetch(f"SELECT * FROM {view} WHERE bucket = ANY($1::timestamptz[]) ORDER BY bucket", due)
    for row in rows:
        rec = aggregate_record(x, dict(row))
        key = iso_ms(rec["bucket"]).encode()
        if x.kafka:
            assert out.encoder is not None  # every Kafka stream has its topic's encoder (ShareWorker._use)
            out.kafka.add(x.topic, key, out.encoder.encode(rec))
        if x.mqtt:
            out.mqtt.publish(x.mqtt_prefix, aggregate_json(rec))
    async with memory.producing(conn, out.kafka.pending_topics() if out.local else ()):
        await out.kafka.flush()
    await out.mqtt.flush()
    await conn.execute(
        "UPDATE hub.share_windows SET last_window = $2, updated_at = now() WHERE stream = $1", x.id, due[-1]
    )
    counted = store.Shared(x.agreement.id, x.consumer, c.feed_key, str(c.form), x.lane, records=len(rows))
    if rows:
        counted.last_ms = int(rows[-1]["bucket"].timestamp() * 1000)
    await store.count(conn, {x.id: counted})
    share_metrics.count({x.id: counted})
    return Emitted(len(due), len(rows))
