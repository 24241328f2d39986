"""`hub plan` and `hub apply`: read the catalog and servers, diff, and apply all or nothing.

Connector configs, organisations and agreements are applied together (hub/control/sources.py sorts the
files given). Order of effects: every catalog row, schema version, table change, role and shared view
happens in one database transaction, whose last steps check the invariants of shared objects and the
agreements' expectations (a failure rolls everything back) and then change the MQTT broker's accounts
to match the catalog (hub/control/broker_sync.py), so a broker that refuses leaves nothing committed;
Kafka topics are created before it commits (an extra empty topic is harmless and reused next time);
sessions of organisations whose shared objects were dropped or narrowed are ended before the change and
again after the commit. Every plan compares the broker with the catalog, so a second apply repairs
whatever drifted there.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from hub.catalog import agreements as shared
from hub.catalog import store as catalog
from hub.catalog.locks import APPLY_LOCK
from hub.catalog.topics import feed_topic_specs
from hub.control import broker_sync, share_apply
from hub.control.desired import load_desired
from hub.control.plan import CurrentState, DesiredPartner, Plan, make_plan
from hub.control.share_plan import SharingPlan, make_sharing_plan
from hub.control.size import LockTable, too_large
from hub.control.sources import Sources, classify
from hub.db import connection, install_timescaledb, timescale_state, uses_timescaledb
from hub.errors import ConfigError
from hub.kafka import KafkaAdmin
from hub.mqtt_auth.accounts import generate_secret, hash_password
from hub.mqtt_auth.dynsec import BrokerAuth, DynsecBroker
from hub.mqtt_auth.reconcile import Diff
from hub.settings import HubSettings


@dataclass
class ApplyResult:
    plan: Plan
    credentials: dict[str, str] = field(default_factory=dict)  # MQTT user name -> new password (shown once)
    db_passwords: dict[str, str] = field(default_factory=dict)  # organisation -> new database password (shown once)
    expectations: int = 0  # agreement expectations that held (every applied agreement's, checked by every run)
    agreement_files: int = 0  # agreement files this run read


def actor_name() -> str:
    """Who applies, as the audit trail records it (the database also records its own login role)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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


@dataclass
class _Files:
    sources: Sources
    desired: list[DesiredPartner]
    sharing: share_apply.SharingFiles


def _read_files(settings: HubSettings, paths: Path | Sequence[Path], schemas_dir: Path | None) -> _Files:
    """Every file read and validated on its own, before any server is touched."""
    sources = classify(paths)
    return _Files(sources, load_desired(sources.connectors, settings, schemas_dir), share_apply.read_files(sources))


@dataclass
class _Run:
    plan: Plan
    sharing: SharingPlan


async def _make(conn: asyncpg.Connection, admin: KafkaAdmin, files: _Files, now: datetime, timescale: bool) -> _Run:
    the_plan = make_plan(files.desired, await read_current(conn, admin), timescale)
    feeds = await share_apply.all_feeds(conn, files.desired)
    wanted = await share_apply.read_desired(conn, files.sharing, files.sources, files.desired, feeds, now)
    sharing = make_sharing_plan(wanted, await share_apply.read_current(conn, feeds), now)
    the_plan.changes += sharing.changes
    the_plan.notes += sharing.notes
    return _Run(the_plan, sharing)


async def lock_table(conn: asyncpg.Connection) -> LockTable:
    names = ("max_locks_per_transaction", "max_connections", "max_prepared_transactions")
    values = await conn.fetchrow(f"SELECT {', '.join(f'current_setting($${n}$$)::int' for n in names)}")
    return LockTable(*values)


async def plan(
    settings: HubSettings,
    paths: Path | Sequence[Path],
    schemas_dir: Path | None = None,
    *,
    broker: BrokerAuth | None = None,
) -> Plan:
    """What `apply` would change; it changes nothing, in every case.

    With the catalog at this hub's version the plan is read in a read-only transaction, so even a change
    slipped in by mistake is refused by the server. A catalog that is missing or older is made as `apply`
    would make it inside a transaction that is always rolled back, so that organisations and agreements
    can be planned against it too; no extension is ever created.
    """
    files = _read_files(settings, paths, schemas_dir)  # file errors before any server is touched
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn, KafkaAdmin(settings, ep.kafka_bootstrap) as admin:
        state = await timescale_state(conn)
        ts = uses_timescaledb(state)
        version = await catalog.installed_version(conn)
        transaction = conn.transaction(readonly=version == catalog.CATALOG_VERSION)
        await transaction.start()
        try:
            if version != catalog.CATALOG_VERSION:
                await conn.execute(catalog.CATALOG_DDL)
            run = await _make(conn, admin, files, datetime.now(UTC), ts)
            the_plan = run.plan
            broker = broker or DynsecBroker.from_settings(settings)
            await _with_broker(settings, conn, broker, the_plan, run.sharing.mqtt_consumers)
            locks = await lock_table(conn)
        finally:
            await transaction.rollback()
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


async def _with_broker(
    settings: HubSettings, conn: asyncpg.Connection, broker: BrokerAuth, the_plan: Plan, consumers: list[str]
) -> Diff:
    """Add to the plan what the broker's accounts need (new partners' and consumers' logins, whatever drifted)."""
    new = [c.target for c in the_plan.of_kind("partner") if c.action == "create"]
    diff = await broker_sync.broker_diff(settings, conn, broker, new_partners=new, issue=new, consumers=consumers)
    the_plan.changes += broker_sync.plan_changes(diff)
    the_plan.notes += diff.notes
    return diff


async def apply(
    settings: HubSettings,
    paths: Path | Sequence[Path],
    schemas_dir: Path | None = None,
    *,
    broker: BrokerAuth | None = None,
    actor: str | None = None,
) -> ApplyResult:
    """Apply connector configs, organisations and agreements, all or nothing; the broker's accounts last."""
    files = _read_files(settings, paths, schemas_dir)
    ep = settings.endpoints()
    now = datetime.now(UTC)
    broker = broker or DynsecBroker.from_settings(settings)
    async with connection(ep.database_url) as conn, KafkaAdmin(settings, ep.kafka_bootstrap) as admin:
        ts = await install_timescaledb(conn)
        await catalog.ensure_catalog(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
            run = await _make(conn, admin, files, now, ts)
            accounts = await _with_broker(settings, conn, broker, run.plan, run.sharing.mqtt_consumers)
            result = ApplyResult(run.plan, agreement_files=len(files.sources.agreements))
            if not run.plan.empty:
                refused = too_large(run.plan, await lock_table(conn), settings.apply_max_locks)
                if refused:
                    raise ConfigError(f"{refused}; nothing was applied")
                dropped: list[tuple[str, str]] = []
                for partner in files.desired:
                    dropped += await _apply_partner(conn, partner, result)
                await admin.ensure_topics(feed_topic_specs(settings, (f for p in files.desired for f in p.feeds)))
                result.db_passwords = await share_apply.execute(
                    conn,
                    run.sharing,
                    run.plan.timescale,
                    actor or actor_name(),
                    now,
                    dropped,
                    database_grants=settings.share_database_grants,
                )
            failures = await share_apply.verify(conn, run.sharing, now)
            if failures:
                raise share_apply.refuse(failures)
            result.expectations = len(run.sharing.expectations)
            if not run.plan.empty:  # last, still inside the transaction: a broker that refuses commits nothing
                result.credentials = await broker_sync.execute(conn, broker, accounts.changes, result.credentials)
        if run.plan.empty:
            return result
        await shared.terminate_sessions(conn, sorted(run.sharing.terminate))
    return result


async def _apply_partner(
    conn: asyncpg.Connection, partner: DesiredPartner, result: ApplyResult
) -> list[tuple[str, str]]:
    """A partner's rows, schemas and tables; the shared views dropped because their table changed shape."""
    p = partner.config.partner
    dropped: list[tuple[str, str]] = []
    if any(c.target == p.id and c.action == "create" for c in result.plan.of_kind("partner")):  # a new partner
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
                if any(stmt.startswith("DROP ") or " TYPE " in stmt for stmt in change.sql):
                    # a rollup rebuilt or a column retyped: views reading them must go first (re-created after)
                    dropped += await share_apply.drop_dependent_views(conn, f.table.schema, f.table.table)
                for stmt in change.sql:
                    await conn.execute(stmt)
        await catalog.set_resource(conn, "table", target, "ready")
        await catalog.set_resource(conn, "topic", f.kafka_topic, "ready", f"{f.partitions} partitions")
    return dropped
