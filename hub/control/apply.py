"""`hub plan` and `hub apply`: read the catalog and servers, diff, and apply all or nothing.

Order of effects: every catalog row, schema version and table change happens in one
database transaction; Kafka topics are created before it commits (a failure rolls the
transaction back; an extra empty topic is harmless and reused next time); the MQTT
password and ACL files are rewritten from the committed catalog last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from hub.catalog import store as catalog
from hub.catalog.locks import APPLY_LOCK
from hub.catalog.topics import feed_topic_specs
from hub.control.desired import load_desired
from hub.control.plan import CurrentState, DesiredPartner, Plan, make_plan
from hub.control.size import LockTable, too_large
from hub.db import connection, install_timescaledb, timescale_state, uses_timescaledb
from hub.errors import ConfigError
from hub.kafka import KafkaAdmin
from hub.mqtt_auth import BrokerAuth, MqttUser, generate_secret, hash_password, hub_service_user
from hub.settings import Endpoints, HubSettings


@dataclass
class ApplyResult:
    plan: Plan
    credentials: dict[str, str] = field(default_factory=dict)  # partner id -> new MQTT password (shown once)
    mqtt_reloaded: bool = False


async def read_current(conn: asyncpg.Connection, admin: KafkaAdmin) -> CurrentState:
    state = CurrentState()
    for r in await catalog.partners(conn):
        state.partners[r["id"]] = {"name": r["name"], "kind": r["kind"], "contact": r["contact"]}
    for f in await catalog.feeds(conn):
        state.feeds[(f.partner_id, f.name)] = f
        state.history[f.subject] = [text for _v, _id, text in await catalog.subject_history(conn, f.subject)]
        columns = await catalog.table_columns(conn, f.table_schema, f.table_name)
        if columns:  # a table dropped by hand is created again
            state.tables[(f.table_schema, f.table_name)] = columns
    state.topics = await admin.topics()
    return state


async def lock_table(conn: asyncpg.Connection) -> LockTable:
    names = ("max_locks_per_transaction", "max_connections", "max_prepared_transactions")
    values = await conn.fetchrow(f"SELECT {', '.join(f'current_setting($${n}$$)::int' for n in names)}")
    return LockTable(*values)


async def plan(settings: HubSettings, path: Path, schemas_dir: Path | None = None) -> Plan:
    """What `apply` would change. Read-only in every case: it runs in a read-only transaction, so even a
    change slipped in by mistake is refused by the server; it neither creates the catalog nor an extension."""
    desired = load_desired(path, settings, schemas_dir)  # config errors before any server is touched
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn, KafkaAdmin(settings, ep.kafka_bootstrap) as admin:
        async with conn.transaction(readonly=True):
            state = await timescale_state(conn)
            ts = uses_timescaledb(state)
            version = await catalog.installed_version(conn)
            current = await read_current(conn, admin) if version is not None else CurrentState()
            locks = await lock_table(conn)
        the_plan = make_plan(desired, current, ts)
        if version != catalog.CATALOG_VERSION:
            the_plan.notes.append(
                f"the hub's catalog (schema hub) is {'created' if version is None else 'upgraded from ' + version} "
                f"first ({catalog.CATALOG_VERSION})"
            )
        refused = too_large(the_plan, locks, settings.apply_max_locks)
        if refused:
            the_plan.notes.append(f"`hub apply` will refuse this plan: {refused}")
        if ts and not state.installed:
            the_plan.notes.append("the TimescaleDB extension is created first (CREATE EXTENSION timescaledb)")
        return the_plan


async def apply(
    settings: HubSettings, path: Path, schemas_dir: Path | None = None, *, broker: BrokerAuth
) -> ApplyResult:
    """Apply connector configs, all or nothing; the broker's accounts are written to `broker` last."""
    desired = load_desired(path, settings, schemas_dir)
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn, KafkaAdmin(settings, ep.kafka_bootstrap) as admin:
        ts = await install_timescaledb(conn)
        await catalog.ensure_catalog(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
            the_plan = make_plan(desired, await read_current(conn, admin), ts)
            result = ApplyResult(the_plan)
            if the_plan.empty:
                return result
            refused = too_large(the_plan, await lock_table(conn), settings.apply_max_locks)
            if refused:
                raise ConfigError(f"{refused}; nothing was applied")
            for partner in desired:
                await _apply_partner(conn, partner, result)
            await admin.ensure_topics(feed_topic_specs(settings, (f for p in desired for f in p.feeds)))
        result.mqtt_reloaded = await sync_mqtt_auth(settings, ep, conn, broker)
    return result


async def _apply_partner(conn: asyncpg.Connection, partner: DesiredPartner, result: ApplyResult) -> None:
    p = partner.config.partner
    if any(c.target == p.id for c in result.plan.of_kind("credentials")):  # a new partner
        password = generate_secret()
        result.credentials[p.id] = password
        await conn.execute(
            """INSERT INTO hub.partners (id, name, kind, contact, mqtt_username, mqtt_password_hash, config_file)
               VALUES ($1, $2, $3, $4, $1, $5, $6)""",
            p.id, p.name, str(p.kind), p.contact, hash_password(password), partner.file,
        )  # fmt: skip
    else:
        await conn.execute(
            """UPDATE hub.partners SET name = $2, kind = $3, contact = $4, config_file = $5, updated_at = now()
               WHERE id = $1 AND (name, kind, contact, config_file) IS DISTINCT FROM ($2, $3, $4, $5)""",
            p.id, p.name, str(p.kind), p.contact, partner.file,
        )  # fmt: skip
    for f in partner.feeds:
        config = json.dumps(f.feed.model_dump(mode="json", by_alias=True))
        await conn.execute(
            """INSERT INTO hub.feeds (partner_id, name, schema_name, subject, compatibility, mqtt_filter,
                   kafka_topic, partitions, table_schema, table_name, description, licence, config)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)
               ON CONFLICT (partner_id, name) DO UPDATE SET schema_name = $3, compatibility = $5,
                   mqtt_filter = $6, description = $11, licence = $12, config = $13::jsonb, updated_at = now()
               WHERE hub.feeds.config IS DISTINCT FROM $13::jsonb OR hub.feeds.mqtt_filter IS DISTINCT FROM $6""",
            p.id, f.feed.name, f.schema.name, f.subject, str(f.feed.compatibility), f.mqtt_filter,
            f.kafka_topic, f.partitions, f.table.schema, f.table.table, f.feed.description, f.feed.licence, config,
        )  # fmt: skip
        await catalog.register_schema(conn, f.subject, f.schema.canonical)
        target = f"{f.table.schema}.{f.table.table}"
        for change in result.plan.changes:
            if change.sql and (change.target == target or change.target.startswith(target + ".")):
                for stmt in change.sql:
                    await conn.execute(stmt)
        await catalog.set_resource(conn, "table", target, "ready")
        await catalog.set_resource(conn, "topic", f.kafka_topic, "ready", f"{f.partitions} partitions")


async def sync_mqtt_auth(settings: HubSettings, ep: Endpoints, conn: asyncpg.Connection, broker: BrokerAuth) -> bool:
    """Rewrite the broker's accounts from the catalog and have the broker read them again."""
    service = ep.mqtt()
    users = [hub_service_user(settings, hash_password(service.password or ""))]
    root, errors = settings.mqtt_namespace_root, settings.mqtt_error_root
    for r in await catalog.partners(conn):
        users.append(
            MqttUser(
                username=r["mqtt_username"],
                password_hash=r["mqtt_password_hash"],
                write=(f"{root}/{r['id']}/#",),
                read=(f"{errors}/{r['id']}/#",),
            )
        )
    broker.write(users)
    return broker.reload()
