"""The catalog: partners, feeds, schema versions and devices, in PostgreSQL schema `hub`.

The schema registry's storage is here too: Confluent-style global schema ids
(`hub.schemas`) and per-subject versions (`hub.subject_versions`). So are the data plane's
own tables: what ingest counted (`hub.ingest_counters`, `hub.devices`), which ingest
sessions run (`hub.resources`), and landing's offsets, counters, broker epoch and events
(`hub.land_*`, see hub/landing/), with `hub.catalog_feeds`, the view city data teams read.

`CATALOG_DDL` is the whole schema, in one place, idempotent for databases created by any
earlier version (`CREATE .. IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`, `CREATE OR REPLACE`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.catalog.agreements_ddl import AGREEMENTS_DDL
from hub.catalog.api_ddl import API_DDL
from hub.catalog.locks import APPLY_LOCK
from hub.catalog.share_ddl import SHARE_DDL

CATALOG_DDL = """
CREATE SCHEMA IF NOT EXISTS hub;
CREATE TABLE IF NOT EXISTS hub.partners (
    id text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    contact text NOT NULL,
    mqtt_username text NOT NULL UNIQUE,
    mqtt_password_hash text NOT NULL,
    config_file text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hub.schemas (
    id serial PRIMARY KEY,
    fingerprint text NOT NULL UNIQUE,
    schema text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hub.subject_versions (
    subject text NOT NULL,
    version int NOT NULL,
    schema_id int NOT NULL REFERENCES hub.schemas(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);
CREATE TABLE IF NOT EXISTS hub.feeds (
    partner_id text NOT NULL REFERENCES hub.partners(id),
    name text NOT NULL,
    schema_name text NOT NULL,
    subject text NOT NULL UNIQUE,
    compatibility text NOT NULL,
    mqtt_filter text NOT NULL UNIQUE,
    kafka_topic text NOT NULL UNIQUE,
    partitions int NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    description text NOT NULL,
    licence text NOT NULL,
    config jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, name)
);
CREATE TABLE IF NOT EXISTS hub.devices (
    partner_id text NOT NULL,
    feed text NOT NULL,
    device_id text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, feed, device_id)
);
CREATE TABLE IF NOT EXISTS hub.resources (
    kind text NOT NULL,
    name text NOT NULL,
    state text NOT NULL,
    detail text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS hub.land_counters (
    partner_id text NOT NULL,
    feed text NOT NULL,
    kafka_partition int NOT NULL,
    rows bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (partner_id, feed, kafka_partition)
);
CREATE TABLE IF NOT EXISTS hub.land_offsets (
    topic text NOT NULL,
    kafka_partition int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);
-- The log end a landing worker's fetch reported when it stored the offset: what a broker
-- that loses its log takes with it is at most log_end - next_offset per partition.
ALTER TABLE hub.land_offsets ADD COLUMN IF NOT EXISTS log_end bigint;
-- One row: the broker epoch the stored offsets refer to (hub/landing/epoch.py).
CREATE TABLE IF NOT EXISTS hub.land_broker (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch text NOT NULL,
    marker_topic text NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    resets int NOT NULL DEFAULT 0,
    records_lost bigint NOT NULL DEFAULT 0
);
-- What landing noticed and did that a person should know about: a broker that lost its
-- log (and how many records that lost), gaps in a log, topics recreated to free the local
-- broker's memory.
CREATE TABLE IF NOT EXISTS hub.land_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    topic text,
    records bigint,
    detail text NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS hub.ingest_counters (
    partner_id text NOT NULL,
    feed text NOT NULL,
    reason text NOT NULL,
    messages bigint NOT NULL DEFAULT 0,
    last_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, feed, reason)
);
-- Every feed with its owner, licence, table, rollup and current schema version, for city
-- data teams (`hub query catalog`, docs/queries.md).
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
COMMENT ON VIEW hub.catalog_feeds IS 'Every feed with its owner, licence, tables and current schema version';
-- (+15) Dead letters kept durably (hub/landing/dead_letter_rows.py writes them from the dead-letter
-- topic, with its offsets, so each exactly once): the refused message's own bytes, why, whose, when.
-- A replay that sends one to its feed sets replayed_at; one that fails again updates reason and message.
-- Kept HUB_DEAD_LETTER_RETENTION_DAYS and at most HUB_DEAD_LETTER_MAX_ROWS rows (landing prunes them).
CREATE TABLE IF NOT EXISTS hub.dead_letters (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    partner_id text NOT NULL,
    feed text NOT NULL,
    reason text NOT NULL,
    message text NOT NULL,
    stage text NOT NULL,
    mqtt_topic text,
    payload bytea NOT NULL,
    replays int NOT NULL DEFAULT 0,
    replayed_at timestamptz
);
CREATE INDEX IF NOT EXISTS dead_letters_by_feed ON hub.dead_letters (partner_id, feed, at);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON hub.dead_letters (at);
-- (+21) MQTT logins of a partner's devices or gateways (`hub devices`), each bound on the broker to the
-- client id equal to its user name; the partner's own login is hub.partners.mqtt_username.
CREATE TABLE IF NOT EXISTS hub.mqtt_devices (
    partner_id text NOT NULL REFERENCES hub.partners(id),
    name text NOT NULL,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, name)
);
-- (+21) Acknowledgement after landing, exact loss counts, duplicate keys., exact loss counts, duplicate keys.
-- A partition's landed position in the epoch, counted across recreations of its topic:
-- base_offset + next_offset only grows (broker_memory.py adds next_offset to base_offset when it
-- recreates a fully landed topic); generation moves on whenever records beyond next_offset may have
-- been lost (a new epoch, a log found shorter), so a producer waiting for its records sends them again.
ALTER TABLE hub.land_offsets ADD COLUMN IF NOT EXISTS base_offset bigint NOT NULL DEFAULT 0;
ALTER TABLE hub.land_offsets ADD COLUMN IF NOT EXISTS generation int NOT NULL DEFAULT 0;
-- What ingest acknowledged to devices after Kafka's ack (HUB_INGEST_ACK=kafka), as ranges of landed
-- positions (base_offset + offset) per epoch: a broker that loses its log loses exactly the acknowledged
-- records beyond the landed position (hub/landing/epoch.py). Ranges below it are pruned.
CREATE TABLE IF NOT EXISTS hub.ingest_acked (
    epoch text NOT NULL,
    topic text NOT NULL,
    kafka_partition int NOT NULL,
    first_position bigint NOT NULL,
    next_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_acked_partition ON hub.ingest_acked (epoch, topic, kafka_partition, next_position);
-- What landing made of the records of acknowledged messages besides rows (those are hub.land_counters):
-- outcome `duplicate` (byte-identical to the landed row), `redelivered` (the hub's own copy of a
-- message it had already sent: an MQTT redelivery or a resend), `lost` (acknowledged, then lost with
-- the broker's log), or the reason of a dead letter landing wrote (`duplicate_key`, `refused_by_database`, ...).
CREATE TABLE IF NOT EXISTS hub.land_outcomes (
    partner_id text NOT NULL,
    feed text NOT NULL,
    outcome text NOT NULL,
    records bigint NOT NULL DEFAULT 0,
    last_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, feed, outcome)
);
"""
# (+20) Organisations, agreements, their append-only audit trail and pgaudit's read log (kept in a module
# of its own for its length: hub/catalog/agreements_ddl.py).
CATALOG_DDL += AGREEMENTS_DDL
# (+22) Live share streams: lane positions, counters, aggregate windows, consumers' MQTT logins.
CATALOG_DDL += SHARE_DDL
# (+17) Organisations' API tokens and access requests (hub/catalog/api_ddl.py).
CATALOG_DDL += API_DDL


# Bumped whenever CATALOG_DDL changes. The DDL runs only when the database records another
# version: ALTER TABLE and CREATE OR REPLACE VIEW take exclusive locks even when they change
# nothing, so running them at every worker start (and catalog reload) would queue behind
# landing's transactions on hub.land_offsets, and stop every worker behind them.
CATALOG_VERSION = "hub catalog 6 (+16 grafana, +17 api tokens, +22 kafka logins)"
CATALOG_DDL += f"COMMENT ON SCHEMA hub IS '{CATALOG_VERSION}';\n"


def fingerprint(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


async def ensure_catalog(conn: asyncpg.Connection) -> None:
    """Create the catalog, or bring an older one up to `CATALOG_VERSION` (idempotent; safe with concurrent callers).

    A database already at this version costs one query and takes no lock.
    """
    if await installed_version(conn) == CATALOG_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
        if await installed_version(conn) != CATALOG_VERSION:
            await conn.execute(CATALOG_DDL)


async def installed_version(conn: asyncpg.Connection) -> str | None:
    """The catalog version the database records (None before the first `ensure_catalog`)."""
    version: str | None = await conn.fetchval("SELECT obj_description(to_regnamespace('hub'), 'pg_namespace')")
    return version


@dataclass(frozen=True)
class FeedRow:
    partner_id: str
    name: str
    schema_name: str
    subject: str
    compatibility: str
    mqtt_filter: str
    kafka_topic: str
    partitions: int
    table_schema: str
    table_name: str
    description: str
    licence: str
    config: dict[str, Any]
    schema_id: int | None
    schema_version: int | None
    schema_text: str | None


async def partners(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM hub.partners ORDER BY id"))


async def feeds(conn: asyncpg.Connection) -> list[FeedRow]:
    rows = await conn.fetch(
        """
        SELECT f.*, sv.schema_id, sv.version AS schema_version, s.schema AS schema_text
        FROM hub.feeds f
        LEFT JOIN LATERAL (
            SELECT schema_id, version FROM hub.subject_versions v
            WHERE v.subject = f.subject ORDER BY version DESC LIMIT 1
        ) sv ON true
        LEFT JOIN hub.schemas s ON s.id = sv.schema_id
        ORDER BY f.partner_id, f.name
        """
    )
    return [
        FeedRow(
            partner_id=r["partner_id"],
            name=r["name"],
            schema_name=r["schema_name"],
            subject=r["subject"],
            compatibility=r["compatibility"],
            mqtt_filter=r["mqtt_filter"],
            kafka_topic=r["kafka_topic"],
            partitions=r["partitions"],
            table_schema=r["table_schema"],
            table_name=r["table_name"],
            description=r["description"],
            licence=r["licence"],
            config=json.loads(r["config"]),
            schema_id=r["schema_id"],
            schema_version=r["schema_version"],
            schema_text=r["schema_text"],
        )
        for r in rows
    ]


async def subject_history(conn: asyncpg.Connection, subject: str) -> list[tuple[int, int, str]]:
    """(version, schema id, schema text) of a subject, oldest first."""
    rows = await conn.fetch(
        """SELECT v.version, v.schema_id, s.schema FROM hub.subject_versions v
           JOIN hub.schemas s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version""",
        subject,
    )
    return [(r["version"], r["schema_id"], r["schema"]) for r in rows]


async def register_schema(conn: asyncpg.Connection, subject: str, canonical: str) -> tuple[int, int]:
    """Register `canonical` under `subject` (compatibility already checked): (schema id, version)."""
    fp = fingerprint(canonical)
    schema_id = await conn.fetchval(
        """INSERT INTO hub.schemas (fingerprint, schema) VALUES ($1, $2)
           ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = EXCLUDED.fingerprint RETURNING id""",
        fp,
        canonical,
    )
    latest = await conn.fetchrow(
        "SELECT version, schema_id FROM hub.subject_versions WHERE subject = $1 ORDER BY version DESC LIMIT 1",
        subject,
    )
    if latest is not None and latest["schema_id"] == schema_id:
        return schema_id, latest["version"]
    version = (latest["version"] if latest else 0) + 1
    await conn.execute(
        "INSERT INTO hub.subject_versions (subject, version, schema_id) VALUES ($1, $2, $3)",
        subject,
        version,
        schema_id,
    )
    return schema_id, version


@dataclass(frozen=True)
class TableColumn:
    sql_type: str  # as PostgreSQL's format_type renders it, e.g. 'timestamp with time zone', 'numeric(10,2)'
    nullable: bool


async def table_columns(conn: asyncpg.Connection, schema: str, table: str) -> dict[str, TableColumn]:
    """The columns of a table ({} if it does not exist)."""
    rows = await conn.fetch(
        """SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        schema,
        table,
    )
    return {r["name"]: TableColumn(r["type"], r["nullable"]) for r in rows}


async def set_resource(conn: asyncpg.Connection, kind: str, name: str, state: str, detail: str = "") -> None:
    await conn.execute(
        """INSERT INTO hub.resources (kind, name, state, detail) VALUES ($1, $2, $3, $4)
           ON CONFLICT (kind, name) DO UPDATE SET state = $3, detail = $4, updated_at = now()""",
        kind,
        name,
        state,
        detail,
    )
