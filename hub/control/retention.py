"""Retention on plain PostgreSQL: delete rows older than each feed's `retention:`.

TimescaleDB enforces retention with its own policies (see tables.py); without it the
hub does it here, on demand (`hub maintain`, e.g. from cron), in bounded batches so
that a large first run does not hold one long transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from hub.catalog import store as catalog
from hub.connector.model import Feed
from hub.db import timescale_state
from hub.identifiers import qualified


@dataclass(frozen=True)
class Expired:
    table: str
    retention_days: float
    deleted: int


async def enforce_retention(conn: asyncpg.Connection, batch: int = 50_000) -> tuple[bool, list[Expired]]:
    """Returns (whether TimescaleDB does it instead, what was deleted per feed table)."""
    if (await timescale_state(conn)).installed:  # feed tables are hypertables with retention policies
        return True, []
    out = []
    for row in await catalog.feeds(conn):
        feed = Feed.model_validate(row.config)
        table = qualified(row.table_schema, row.table_name)
        seconds = int(feed.retention.total_seconds())
        deleted = 0
        while True:
            status = await conn.execute(
                f"""DELETE FROM {table} WHERE ctid IN (
                        SELECT ctid FROM {table} WHERE "time" < now() - make_interval(secs => $1) LIMIT $2)""",
                seconds,
                batch,
            )
            n = int(status.split()[-1])
            deleted += n
            if n < batch:
                break
        out.append(Expired(f"{row.table_schema}.{row.table_name}", seconds / 86400, deleted))
    return False, out
