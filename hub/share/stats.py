"""`hub stats`, share streams: per agreement and consumer, records shared, the lag, the last record's times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class StreamStats:
    agreement: str
    consumer: str
    feed: str
    form: str
    records: int
    dead_lettered: int
    lag: int | None  # records landed from the feed topic that this stream's lane has not passed yet
    last_shared_at: datetime | None  # when the last record was shared
    last_event_time: datetime | None  # that record's own time (an aggregate's: its window)

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for k in ("last_shared_at", "last_event_time"):
            out[k] = out[k].isoformat() if out[k] else None
        return out


async def share_stats(conn: asyncpg.Connection) -> list[StreamStats]:
    rows = await conn.fetch(
        """SELECT c.*, CASE WHEN c.form = 'raw' THEN (
                   SELECT sum(greatest(l.next_offset - coalesce(o.next_offset, 0), 0))
                   FROM hub.feeds f JOIN hub.land_offsets l ON l.topic = f.kafka_topic
                   LEFT JOIN hub.share_offsets o ON o.topic = l.topic AND o.kafka_partition = l.kafka_partition
                        AND o.lane = c.lane
                   WHERE f.partner_id || '.' || f.name = c.feed) END AS lag
           FROM hub.share_counters c ORDER BY c.agreement_id, c.consumer, c.feed, c.form"""
    )
    return [
        StreamStats(
            r["agreement_id"],
            r["consumer"],
            r["feed"],
            r["form"],
            int(r["records"]),
            int(r["dead_lettered"]),
            None if r["lag"] is None else int(r["lag"]),
            r["last_shared_at"],
            r["last_event_time"],
        )
        for r in rows
    ]
