"""What Grafana is built from, read from the database; and the logins Grafana's datasources use, made there.

`read_site` reads the applied catalog (the world the policy decides over, and each feed's Avro schema) and the
database's own facts (TimescaleDB or not, its version). `ensure_logins` makes each organisation's Grafana login,
the operators' role and the `hub_stats` functions, and keeps their passwords in the owner-only env file of
hub/grafana/passwords.py: generated where missing (the role's password is then set to it), never printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import asyncpg

from hub.agreement import names
from hub.agreement.world import load_world
from hub.catalog import store as catalog
from hub.catalog.locks import APPLY_LOCK
from hub.catalog.store import FeedRow
from hub.control.share_sql import generate_password, scram_verifier
from hub.errors import SchemaError
from hub.grafana import logins, passwords
from hub.grafana.dashboards import FeedMeta
from hub.grafana.model import Site
from hub.grafana.site import DatabaseTarget, build_site
from hub.grafana.sql import Field, Kind
from hub.schema.avro import parse_feed_schema
from hub.settings import HubSettings


def feed_meta(row: FeedRow) -> FeedMeta:
    fields: list[Field] = []
    if row.schema_text:
        try:
            schema = parse_feed_schema(row.schema_text, row.subject)
            docs = {f["name"]: f.get("doc") for f in json.loads(row.schema_text).get("fields", [])}
        except (SchemaError, ValueError, AttributeError):
            schema, docs = None, {}
        for c in schema.columns if schema else ():
            if c.name in ("device_id", "time"):
                continue
            kind: Kind = "number" if c.numeric else ("text" if c.sql_type == "text" else "other")
            fields.append(Field(c.name, kind, docs.get(c.name)))
    return FeedMeta(row.partner_id, row.name, row.description, row.licence, tuple(fields))


def database_target(settings: HubSettings, timescaledb: bool, server_version: int) -> DatabaseTarget:
    url = urlsplit(settings.endpoints().database_url)
    host = settings.grafana_db_host or f"{url.hostname}:{url.port or 5432}"
    return DatabaseTarget(
        host=host,
        database=unquote(url.path.lstrip("/")) or "postgres",
        sslmode=settings.grafana_db_sslmode,
        timescaledb=timescaledb,
        postgres_version=server_version // 10000 * 100,
        operators_role=settings.grafana_db_user,
    )


async def read_site(conn: asyncpg.Connection, settings: HubSettings, at: datetime | None = None) -> Site:
    await catalog.ensure_catalog(conn)
    world = await load_world(conn)
    feeds = {f"{r.partner_id}.{r.name}": feed_meta(r) for r in await catalog.feeds(conn)}
    timescaledb = bool(await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"))
    version = int(await conn.fetchval("SHOW server_version_num"))
    target = database_target(settings, timescaledb, version)
    return build_site(world, feeds, target, at or datetime.now(UTC), settings.grafana_prometheus_url)


@dataclass
class LoginReport:
    created: list[str] = field(default_factory=list)  # roles made now
    new_passwords: list[str] = field(default_factory=list)  # roles whose password was (re)generated now
    missing: list[str] = field(default_factory=list)  # organisations whose own role is not there yet
    notes: list[str] = field(default_factory=list)


async def ensure_logins(
    conn: asyncpg.Connection, settings: HubSettings, site: Site, secrets_file: Path
) -> tuple[LoginReport, dict[str, str]]:
    """Every datasource's role, ready to log in with the password in `secrets_file`. Returns the report and the
    passwords by environment variable. All or nothing: one transaction, under the lock `hub apply` takes."""
    stored = passwords.load(secrets_file)
    values = dict(stored)
    report = LoginReport()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
        roles = {r["rolname"] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
        for stmt in logins.stats_sql():
            await conn.execute(stmt)
        for ds in site.datasources:
            verifier = None
            if ds.org is None:
                exists = ds.user in roles
                if not exists:
                    values[ds.password_env] = generate_password()
                    verifier = scram_verifier(values[ds.password_env])
                    report.created.append(ds.user)
                    report.new_passwords.append(ds.user)
                elif ds.password_env not in values:
                    report.notes.append(
                        f"{ds.user} was made elsewhere and its password is not in {secrets_file}: Grafana gets it "
                        f"as {ds.password_env} (docker-compose.yml passes it)"
                    )
                stmts = logins.operators_sql(
                    ds.user, verifier, exists=exists, database_grants=settings.share_database_grants
                )
            else:
                if names.org_role(ds.org) not in roles:
                    report.missing.append(ds.org)
                    continue
                exists = ds.user in roles
                if not exists or ds.password_env not in stored:
                    values[ds.password_env] = generate_password()
                    report.new_passwords.append(ds.user)
                    verifier = scram_verifier(values[ds.password_env])
                if not exists:
                    report.created.append(ds.user)
                stmts = logins.login_sql(
                    ds.org, verifier, exists=exists, database_grants=settings.share_database_grants
                )
            for stmt in stmts:
                await conn.execute(stmt)
    if values != stored:
        # After the commit: should this fail, the next run finds no password and makes a new one.
        passwords.save(secrets_file, values)
    return report, values


def login_url(database_url: str, role: str, password: str) -> str:
    """The hub's database URL with another role's login in place of its own."""
    parts = urlsplit(database_url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return f"{parts.scheme}://{quote(role, safe='')}:{quote(password, safe='')}@{host}{parts.path}"
