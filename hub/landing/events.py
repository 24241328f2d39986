"""`hub.land_events`: what landing noticed and did that a person should know about.

Kinds: `broker-reset` (the broker lost its log; epoch.py), `log-truncated` (a topic was
recreated behind landing's back), `records-missing` (a gap in a log), `topic-recreated`
(a fully landed topic recreated to free the local broker's memory; broker_memory.py).
The table is part of the catalog (hub/catalog/store.py).
"""

from __future__ import annotations

import asyncpg


async def record_event(
    conn: asyncpg.Connection, kind: str, topic: str | None, records: int | None, detail: str
) -> None:
    await conn.execute(
        "INSERT INTO hub.land_events (kind, topic, records, detail) VALUES ($1, $2, $3, $4)",
        kind,
        topic,
        records,
        detail,
    )
