"""The landing workers' own catalog objects, beside the catalog's `hub.land_offsets` and `hub.land_counters`.

- `hub.land_offsets.log_end`: a column added to the catalog's table (see LANDING_DDL).
- `hub.land_broker`: one row, the broker epoch the stored offsets refer to (see epoch.py).
- `hub.land_events`: what landing noticed and did that a person should know about: a broker
  that lost its log (and how many records that lost), gaps in a log, topics recreated to
  free the local broker's memory.
- `hub.catalog_feeds`: every feed with its owner, licence, table, rollup and current schema
  version, for city data teams (`hub query catalog`, docs/queries.md).

Created by every landing worker at start and by `hub query` (idempotent, under one lock).
"""

from __future__ import annotations

import asyncpg

from hub.control import catalog

# Advisory lock keys (first argument of the two-key form): landing's DDL, the broker epoch,
# and one lock per feed topic for recreating it (second key: hashtext(topic)).
DDL_LOCK = 0x6875_6210
EPOCH_LOCK = 0x6875_6211
TOPIC_LOCK_SPACE = 0x6875_6212

# Bumped whenever LANDING_DDL changes: workers run the DDL only when the database has another version,
# so a worker start does not lock hub.land_offsets (ALTER TABLE) while other workers write.
LANDING_SCHEMA_VERSION = "landing schema 1"

LANDING_DDL = """
-- The log end a worker's fetch reported when it stored the offset: what a broker that
-- loses its log takes with it is at most log_end - next_offset per partition.
ALTER TABLE hub.land_offsets ADD COLUMN IF NOT EXISTS log_end bigint;
CREATE TABLE IF NOT EXISTS hub.land_broker (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch text NOT NULL,
    marker_topic text NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    resets int NOT NULL DEFAULT 0,
    records_lost bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS hub.land_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    topic text,
    records bigint,
    detail text NOT NULL DEFAULT ''
);
CREATE OR REPLACE VIEW hub.catalog_feeds AS
SELECT f.partner_id,
       p.name AS owner,
       p.kind AS owner_kind,
       f.name AS feed,
       f.description,
       f.licence,
       format('%I.%I', f.table_schema, f.table_name) AS table_name,
       format('%I.%I', f.table_schema, f.table_name || '_rollup') AS rollup_name,
       sv.version AS schema_version,
       sv.schema_id,
       f.subject,
       f.kafka_topic,
       f.mqtt_filter AS mqtt_topic,
       coalesce(lc.rows, 0)::bigint AS rows_landed,
       f.updated_at
FROM hub.feeds f
JOIN hub.partners p ON p.id = f.partner_id
LEFT JOIN LATERAL (
    SELECT v.version, v.schema_id FROM hub.subject_versions v
    WHERE v.subject = f.subject ORDER BY v.version DESC LIMIT 1
) sv ON true
LEFT JOIN (
    SELECT partner_id, feed, sum(rows) AS rows FROM hub.land_counters GROUP BY partner_id, feed
) lc ON lc.partner_id = f.partner_id AND lc.feed = f.name;
"""
LANDING_DDL += f"COMMENT ON VIEW hub.catalog_feeds IS '{LANDING_SCHEMA_VERSION}';\n"


async def ensure_landing_schema(conn: asyncpg.Connection) -> None:
    """The catalog, then landing's own tables and views (idempotent; safe with several workers starting)."""
    await catalog.ensure_catalog(conn)
    if await _installed_version(conn) == LANDING_SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK)
        if await _installed_version(conn) != LANDING_SCHEMA_VERSION:
            await conn.execute(LANDING_DDL)


async def _installed_version(conn: asyncpg.Connection) -> str | None:
    version: str | None = await conn.fetchval("SELECT obj_description(to_regclass('hub.catalog_feeds'), 'pg_class')")
    return version


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
