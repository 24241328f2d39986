"""The catalog: partners, feeds, schema versions and devices, in PostgreSQL schema `hub`.

The schema registry's storage is here too: Confluent-style global schema ids
(`hub.schemas`) and per-subject versions (`hub.subject_versions`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

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
CREATE TABLE IF NOT EXISTS hub.ingest_counters (
    partner_id text NOT NULL,
    feed text NOT NULL,
    reason text NOT NULL,
    messages bigint NOT NULL DEFAULT 0,
    last_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, feed, reason)
);
"""

# Only one `hub apply` changes the catalog at a time.
APPLY_LOCK = 0x6875_6201


def fingerprint(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


async def ensure_catalog(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
        await conn.execute(CATALOG_DDL)


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
