"""Reading the sharing state from the database and carrying a sharing plan out, inside `hub apply`'s
transaction (hub/control/apply.py), then checking what the database now allows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from hub.agreement import names
from hub.agreement.grants import FeedInfo
from hub.agreement.loader import LoadedAgreement, LoadedOrganisation, load_agreements, load_organisation
from hub.agreement.world import feed_info, feed_info_of_row, load_world
from hub.catalog import agreements as shared
from hub.catalog import store as catalog
from hub.control import share_sql
from hub.control.plan import DesiredPartner
from hub.control.share_checks import broken_invariants, expectation_failures
from hub.control.share_desired import OrgSpec, SharingDesired, desired_sharing
from hub.control.share_plan import SharingCurrent, SharingPlan
from hub.control.sources import Sources
from hub.errors import ConfigError, HubError


@dataclass
class SharingFiles:
    """Organisation and agreement files, read and validated on their own before any server is touched."""

    organisations: list[LoadedOrganisation] = field(default_factory=list)
    agreements: list[LoadedAgreement] = field(default_factory=list)


def read_files(sources: Sources) -> SharingFiles:
    out = SharingFiles()
    out.organisations = [load_organisation(p) for p in sources.organisations]
    for p in sources.agreements:
        out.agreements += load_agreements(p)
    return out


async def all_feeds(conn: asyncpg.Connection, partners: Sequence[DesiredPartner]) -> dict[str, FeedInfo]:
    feeds = {info.key: info for info in (feed_info_of_row(f) for f in await catalog.feeds(conn))}
    for p in partners:
        for f in p.feeds:
            info = feed_info(p.id, f.feed.name, f.schema.columns, f.feed.rollup)
            feeds[info.key] = info
    return feeds


async def read_desired(
    conn: asyncpg.Connection,
    files: SharingFiles,
    sources: Sources,
    partners: Sequence[DesiredPartner],
    feeds: Mapping[str, FeedInfo],
    now: datetime,
) -> SharingDesired:
    known: dict[str, OrgSpec] = {
        r["id"]: OrgSpec(r["id"], r["name"], r["kind"], r["contact"], r["config_file"], True)
        for r in await catalog.partners(conn)
    }
    for p in partners:
        c = p.config.partner
        known[c.id] = OrgSpec(c.id, c.name, str(c.kind), c.contact, p.file, True)
    catalog_orgs = {
        r["id"]: OrgSpec(r["id"], r["name"], r["kind"], r["contact"], r["config_file"], False, r["connection_limit"])
        for r in await shared.organisations(conn)
    }
    return desired_sharing(
        files.organisations,
        files.agreements,
        sources,
        known,
        feeds,
        catalog_orgs,
        await shared.agreements(conn),
        await shared.devices_on_record(conn),
        now,
    )


async def read_current(conn: asyncpg.Connection, feeds: Mapping[str, FeedInfo]) -> SharingCurrent:
    current = SharingCurrent(
        version=await shared.sharing_version(conn),
        roles=await shared.org_roles(conn),
        schemas=await shared.shared_schemas(conn),
        agreements=await shared.agreements(conn),
        objects=await shared.shared_objects(conn),
        keys=await shared.pseudonym_keys(conn),
    )
    for r in await conn.fetch(r"SELECT rolname, rolconnlimit FROM pg_roles WHERE rolname LIKE 'org\_%'"):
        current.connection_limits[r["rolname"]] = r["rolconnlimit"]
    for r in await shared.organisations(conn):
        current.orgs[r["id"]] = OrgSpec(
            r["id"], r["name"], r["kind"], r["contact"], r["config_file"], False, r["connection_limit"]
        )
    for key, feed in feeds.items():
        columns = await catalog.table_columns(conn, feed.provider, f"{feed.name}_rollup")
        if columns:
            current.rollup_columns[key] = set(columns)
    return current


async def drop_dependent_views(conn: asyncpg.Connection, schema: str, table: str) -> list[tuple[str, str]]:
    """Before a feed table or its rollup changes shape: the shared views reading them go (re-created after)."""
    found = await shared.dependent_shared_views(conn, schema, [table, f"{table}_rollup"])
    if found:
        await shared.terminate_sessions(conn, sorted({s for s, _ in found if s != names.OPEN_SCHEMA}))
        for s, n in found:
            for stmt in share_sql.drop_view_sql(s, n):
                await conn.execute(stmt)
    return found


async def execute(
    conn: asyncpg.Connection,
    plan: SharingPlan,
    timescale: bool,
    actor: str,
    now: datetime,
    dropped: Sequence[tuple[str, str]] = (),
    database_grants: bool = True,
) -> dict[str, str]:
    """Carry the plan out (the caller holds the transaction); returns the new organisations' passwords."""
    if plan.bootstrap:
        for stmt in share_sql.bootstrap_sql(timescale) + (share_sql.database_sql() if database_grants else []):
            await conn.execute(stmt)
    for org in plan.orgs_upsert:
        await conn.execute(
            """INSERT INTO hub.organisations (id, name, kind, contact, connection_limit, config_file)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (id) DO UPDATE SET name = $2, kind = $3, contact = $4, connection_limit = $5,
                   config_file = $6, updated_at = now()""",
            org.id, org.name, org.kind, org.contact, org.connection_limit, org.file,
        )  # fmt: skip
    passwords: dict[str, str] = {}
    for org in plan.roles_create:
        password = share_sql.generate_password()
        verifier = share_sql.scram_verifier(password)
        for stmt in share_sql.org_role_sql(org.id, verifier, org.connection_limit):
            await conn.execute(stmt)
        if database_grants:
            for stmt in share_sql.org_connect_sql(org.id):
                await conn.execute(stmt)
        await check_verifier(conn, org.id, verifier)
        passwords[org.id] = password
    for oid in plan.schemas_create:
        for stmt in share_sql.org_schema_sql(oid):
            await conn.execute(stmt)
    for org in plan.limits_change:
        await conn.execute(share_sql.org_limit_sql(org.id, org.connection_limit))

    for d, action, row in plan.agreements_write:
        await conn.execute(
            """INSERT INTO hub.agreements (id, provider, spec, source, line, clause_lines)
               VALUES ($1, $2, $3::jsonb, $4, $5, $6)
               ON CONFLICT (id) DO UPDATE SET provider = $2, spec = $3::jsonb, source = $4, line = $5,
                   clause_lines = $6, updated_at = now()""",
            d.state.id, d.state.provider, json.dumps(d.spec), d.source, d.line, list(d.clause_lines),
        )  # fmt: skip
        if row is None or row.spec != d.spec:
            await shared.record_event(conn, actor, d.state.id, action, None, row.spec if row else None, d.spec)
    for aid, reason in plan.withdraw:
        await mark_revoked(conn, aid, actor, reason)
    if plan.expire:
        await shared.record_expiries(conn, actor)

    await shared.terminate_sessions(conn, sorted(plan.terminate))
    await conn.execute("SET LOCAL lock_timeout = '10s'")
    for schema, name in plan.views_drop:
        for stmt in share_sql.drop_view_sql(schema, name):
            await conn.execute(stmt)
    recreate = list(plan.views_create)
    planned = {(v.schema, v.name) for v in recreate}
    recreate += [plan.desired_views[k] for k in dropped if k in plan.desired_views and k not in planned]
    for v in recreate:
        for stmt in share_sql.create_view_sql(v):
            await conn.execute(stmt)
    for aid in plan.keys_delete:
        await conn.execute(share_sql.delete_key_sql(aid))
    await conn.execute("SET LOCAL lock_timeout = 0")
    return passwords


async def mark_revoked(conn: asyncpg.Connection, aid: str, actor: str, reason: str) -> None:
    before = await conn.fetchval("SELECT spec FROM hub.agreements WHERE id = $1", aid)
    await conn.execute(
        """UPDATE hub.agreements SET status = 'revoked', revoked_at = now(), revoked_by = $2, revoked_reason = $3,
               updated_at = now() WHERE id = $1""",
        aid, actor, reason,
    )  # fmt: skip
    await shared.record_event(conn, actor, aid, "revoked", reason, json.loads(before) if before else None, None)


async def check_verifier(conn: asyncpg.Connection, org: str, verifier: str) -> None:
    """PostgreSQL takes a malformed verifier for a plain password and hashes it: make sure it did not."""
    stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", names.org_role(org))
    if stored != verifier:
        raise HubError(f"the database did not store {names.org_role(org)}'s SCRAM verifier as given; nothing applied")


async def verify(conn: asyncpg.Connection, plan: SharingPlan, now: datetime) -> list[str]:
    """Invariants of shared objects, then the agreements' expectations; the messages of what fails."""
    failures = [f"invariant: {p}" for p in await broken_invariants(conn)]
    world = await load_world(conn)
    failures += await expectation_failures(conn, world, plan.expectations, now)
    return failures


def refuse(failures: list[str]) -> ConfigError:
    return ConfigError(
        "nothing was applied; the database would not hold what the agreements say:\n  " + "\n  ".join(failures)
    )
