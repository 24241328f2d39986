"""The queries city data teams ask most, as SQL (the same text docs/queries.md shows) and as functions.

- latest value per device: the newest row of each device in a feed table;
- 15-minute averages for a day: from the feed's rollup (a real-time continuous aggregate in
  TimescaleDB mode, a view in plain PostgreSQL mode), one row per device and bucket;
- the catalog: every feed with its owner, licence, table, rollup and current schema version.

Each works in both database modes. `hub query latest|rollup|catalog` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from hub.catalog import store as catalog
from hub.errors import NotFound
from hub.identifiers import qualified

CATALOG_SQL = "SELECT * FROM hub.catalog_feeds ORDER BY partner_id, feed"


def latest_sql(table: str) -> str:
    """Newest row per device among rows newer than `$1` (an interval), optionally of device `$2` only.

    DISTINCT ON keeps the first row of each device in `ORDER BY device_id, time DESC` order; the
    time bound keeps the scan to recent chunks (TimescaleDB excludes the others).
    """
    return (
        f"SELECT DISTINCT ON (device_id) * FROM {table}\n"
        "WHERE time > now() - $1::interval AND ($2::text IS NULL OR device_id = $2)\n"
        "ORDER BY device_id, time DESC"
    )


def rollup_day_sql(rollup: str) -> str:
    """The rollup's buckets from `$1` (inclusive) to `$2` (exclusive), optionally of device `$3` only."""
    return (
        f"SELECT * FROM {rollup}\n"
        "WHERE bucket >= $1 AND bucket < $2 AND ($3::text IS NULL OR device_id = $3)\n"
        "ORDER BY device_id, bucket"
    )


@dataclass(frozen=True)
class FeedTables:
    partner_id: str
    feed: str
    table: str  # schema-qualified, quoted
    rollup: str


async def find_feed(conn: asyncpg.Connection, name: str) -> FeedTables:
    """A feed by `partner.feed`, or by its name alone when only one partner has a feed of that name."""
    feeds = await catalog.feeds(conn)
    partner, _, feed = name.rpartition(".")
    found = [f for f in feeds if f.name == feed and (not partner or f.partner_id == partner)]
    if len(found) != 1:
        known = ", ".join(f"{f.partner_id}.{f.name}" for f in feeds) or "none applied yet"
        why = "is ambiguous: name its partner too" if found else "is not a feed"
        raise NotFound(f"{name!r} {why} (feeds: {known})")
    f = found[0]
    return FeedTables(
        f.partner_id,
        f.name,
        qualified(f.table_schema, f.table_name),
        qualified(f.table_schema, f"{f.table_name}_rollup"),
    )


async def latest(
    conn: asyncpg.Connection, feed: str, within: timedelta = timedelta(days=1), device: str | None = None
) -> list[asyncpg.Record]:
    tables = await find_feed(conn, feed)
    return list(await conn.fetch(latest_sql(tables.table), within, device))


async def rollup_day(conn: asyncpg.Connection, feed: str, day: date, device: str | None = None) -> list[asyncpg.Record]:
    """The rollup's buckets of one day (UTC)."""
    tables = await find_feed(conn, feed)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return list(await conn.fetch(rollup_day_sql(tables.rollup), start, start + timedelta(days=1), device))


async def catalog_feeds(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    await catalog.ensure_catalog(conn)  # before the first `hub apply` or worker start
    return list(await conn.fetch(CATALOG_SQL))


def plain(record: asyncpg.Record) -> dict[str, Any]:
    return dict(record.items())
