"""The catalog's organisations and agreements, and what the database holds for them: organisation
roles, shared views, pseudonym keys, devices on record. Queries only; deciding is elsewhere."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

SHARED_SCHEMAS_SQL = r"(n.nspname LIKE 'org\_%' OR n.nspname = 'open_data')"
_FINGERPRINT = re.compile(r"\(fingerprint ([0-9a-f]{16})\)")


@dataclass(frozen=True)
class AgreementRow:
    id: str
    provider: str
    spec: dict[str, Any]
    source: str
    line: int | None
    clause_lines: tuple[int, ...]
    status: str
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_reason: str | None
    expiry_recorded: bool

    @property
    def revoked(self) -> tuple[datetime, str, str] | None:
        if self.revoked_at is None:
            return None
        return self.revoked_at, self.revoked_by or "", self.revoked_reason or ""


async def organisations(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM hub.organisations ORDER BY id"))


async def agreements(conn: asyncpg.Connection) -> dict[str, AgreementRow]:
    rows = await conn.fetch("SELECT * FROM hub.agreements ORDER BY id")
    return {
        r["id"]: AgreementRow(
            id=r["id"],
            provider=r["provider"],
            spec=json.loads(r["spec"]),
            source=r["source"],
            line=r["line"],
            clause_lines=tuple(r["clause_lines"]),
            status=r["status"],
            revoked_at=r["revoked_at"],
            revoked_by=r["revoked_by"],
            revoked_reason=r["revoked_reason"],
            expiry_recorded=r["expiry_recorded"],
        )
        for r in rows
    }


async def record_event(
    conn: asyncpg.Connection,
    actor: str,
    agreement_id: str,
    action: str,
    reason: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO hub.agreement_events (actor, agreement_id, action, reason, before, after)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)""",
        actor,
        agreement_id,
        action,
        reason,
        json.dumps(before) if before is not None else None,
        json.dumps(after) if after is not None else None,
    )


async def events(conn: asyncpg.Connection, since: datetime | None = None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM hub.agreement_events WHERE at >= coalesce($1, '-infinity'::timestamptz) ORDER BY id",
            since,
        )
    )


async def org_roles(conn: asyncpg.Connection) -> set[str]:
    return {r["rolname"] for r in await conn.fetch(r"SELECT rolname FROM pg_roles WHERE rolname LIKE 'org\_%'")}


async def shared_schemas(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(f"SELECT n.nspname FROM pg_namespace n WHERE {SHARED_SCHEMAS_SQL}")
    return {r["nspname"] for r in rows}


async def shared_objects(conn: asyncpg.Connection) -> dict[tuple[str, str], str | None]:
    """Every relation in an organisation's schema or open_data, with the fingerprint its comment records."""
    rows = await conn.fetch(
        f"""SELECT n.nspname, c.relname, obj_description(c.oid, 'pg_class') AS comment
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {SHARED_SCHEMAS_SQL} AND c.relkind IN ('r', 'v', 'm', 'p', 'f')"""
    )
    out: dict[tuple[str, str], str | None] = {}
    for r in rows:
        found = _FINGERPRINT.search(r["comment"] or "")
        out[(r["nspname"], r["relname"])] = found.group(1) if found else None
    return out


async def dependent_shared_views(conn: asyncpg.Connection, schema: str, relations: list[str]) -> list[tuple[str, str]]:
    """Shared views that read any of these relations of `schema` (which must go before the relation changes)."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT n.nspname, c.relname
            FROM pg_depend d
            JOIN pg_rewrite w ON w.oid = d.objid
            JOIN pg_class c ON c.oid = w.ev_class
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_class b ON b.oid = d.refobjid
            JOIN pg_namespace bn ON bn.oid = b.relnamespace
            WHERE d.classid = 'pg_rewrite'::regclass AND {SHARED_SCHEMAS_SQL}
              AND bn.nspname = $1 AND b.relname = ANY($2::text[]) AND c.oid <> b.oid""",
        schema,
        relations,
    )
    return [(r["nspname"], r["relname"]) for r in rows]


async def pseudonym_keys(conn: asyncpg.Connection) -> set[str]:
    if not await conn.fetchval("SELECT to_regclass('hub_private.pseudonym_keys') IS NOT NULL"):
        return set()
    return {r["agreement_id"] for r in await conn.fetch("SELECT agreement_id FROM hub_private.pseudonym_keys")}


async def sharing_version(conn: asyncpg.Connection) -> str | None:
    version: str | None = await conn.fetchval("SELECT obj_description(to_regnamespace('hub_private'), 'pg_namespace')")
    return version


async def devices_on_record(conn: asyncpg.Connection) -> dict[str, set[str]]:
    """Devices the hub has heard from, per partner.feed."""
    out: dict[str, set[str]] = {}
    for r in await conn.fetch("SELECT partner_id, feed, device_id FROM hub.devices"):
        out.setdefault(f"{r['partner_id']}.{r['feed']}", set()).add(r["device_id"])
    return out


async def terminate_sessions(conn: asyncpg.Connection, roles: list[str]) -> int:
    """End every session of these roles now (their open transactions too): a revoked or narrowed grant must
    not keep answering a statement prepared before it changed. Sessions of their members end too: Grafana's
    login of an organisation logs in as itself and reads as the organisation's role."""
    if not roles:
        return 0
    ended: int = await conn.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE (usename = ANY($1::text[]) OR usesysid IN (
                  SELECT m.member FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                  WHERE r.rolname = ANY($1::text[])))
             AND pid <> pg_backend_pid()""",
        roles,
    )
    return ended


async def record_expiries(conn: asyncpg.Connection, actor: str) -> list[str]:
    """Agreements whose validity ended and whose end the audit trail does not show yet: recorded now.

    Expiry needs no job to take effect (the views compare the statement's time with the end); this only
    writes it down, whenever the hub next looks (`hub apply`, `hub audit`).
    """
    rows = await conn.fetch(
        """UPDATE hub.agreements SET expiry_recorded = true
           WHERE status = 'active' AND NOT expiry_recorded AND (spec->>'valid_until')::timestamptz <= now()
           RETURNING id, spec->>'valid_until' AS until"""
    )
    for r in rows:
        await record_event(conn, actor, r["id"], "expired", f"valid until {r['until']}")
    return [r["id"] for r in rows]


async def objects_of_agreement(conn: asyncpg.Connection, agreement_id: str) -> list[tuple[str, str]]:
    """The shared objects an agreement's clauses made (their comments name it)."""
    rows = await conn.fetch(
        f"""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {SHARED_SCHEMAS_SQL} AND obj_description(c.oid, 'pg_class') LIKE $1""",
        f"hub share: agreement {agreement_id}, %",
    )
    return [(r["nspname"], r["relname"]) for r in rows]
