"""`hub audit`: who read which shared object, when and how much (pgaudit's session log of organisation
roles, read back through `hub.pgaudit_lines()`), what they were refused, and every agreement event."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from hub.agreement import names
from hub.catalog import agreements as shared
from hub.catalog import store as catalog

PGAUDIT_FIELDS = (
    "audit_type",
    "statement_id",
    "substatement_id",
    "class",
    "command",
    "object_type",
    "object_name",
    "statement",
    "parameter",
)


def parse_pgaudit(message: str) -> dict[str, str]:
    """'AUDIT: SESSION,1,1,READ,SELECT,VIEW,org_x.v,"select ..",<none>[,rows]' as a dict (pgaudit quotes the
    CSV part: statements with commas, quotes or newlines survive)."""
    row = next(csv.reader([message.removeprefix("AUDIT: ")]))
    out = dict(zip(PGAUDIT_FIELDS, row, strict=False))
    if len(row) > len(PGAUDIT_FIELDS):  # pgaudit.log_rows = on adds the rows returned
        out["rows"] = row[len(PGAUDIT_FIELDS)]
    return out


@dataclass
class Reads:
    role: str
    object: str
    reads: int = 0
    rows: int = 0
    first: datetime | None = None
    last: datetime | None = None


@dataclass
class AuditReport:
    reading: bool  # read auditing is on and its log readable
    why_not: str | None
    reads: list[Reads] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def summarise(
    lines: list[asyncpg.Record] | list[dict[str, Any]], org: str | None
) -> tuple[list[Reads], list[dict[str, Any]]]:
    """Reads of shared objects per (role, object), and refused statements, from pgaudit_lines() rows."""
    role_wanted = names.org_role(org) if org else None
    reads: dict[tuple[str, str], Reads] = {}
    refused: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for r in lines:
        role = r["role"] or ""
        # an organisation's Grafana login reads as the organisation: its reads are the organisation's, by Grafana
        reads_as = role
        if role.startswith(names.GRAFANA_LOGIN_PREFIX):
            reads_as = names.org_role(role.removeprefix(names.GRAFANA_LOGIN_PREFIX))
        if role_wanted and reads_as != role_wanted:
            continue
        if r["kind"] == "refused":
            refused.append({"at": r["at"], "role": role, "message": r["message"], "statement": r["statement"]})
            continue
        a = parse_pgaudit(r["message"])
        key = (r["session_id"], a.get("statement_id"), a.get("substatement_id"), a.get("object_name"))
        if key in seen:
            continue
        seen.add(key)
        obj = a.get("object_name", "")
        # only the shared objects themselves: pgaudit also logs the base relations behind a view
        if a.get("class") != "READ" or obj.split(".", 1)[0] not in (reads_as, names.OPEN_SCHEMA):
            continue
        entry = reads.setdefault((role, obj), Reads(role, obj))
        entry.reads += 1
        entry.rows += int(a["rows"]) if a.get("rows", "").isdigit() else 0
        entry.first = min(entry.first or r["at"], r["at"])
        entry.last = max(entry.last or r["at"], r["at"])
    return sorted(reads.values(), key=lambda x: (x.role, x.object)), refused


def why_not_auditing(cap: asyncpg.Record) -> str | None:
    if not cap["pgaudit_installed"]:
        return (
            "read auditing is off: pgaudit is not installed on the database server (Debian: apt-get install "
            "postgresql-15-pgaudit, then restart it; `./scripts/setup.sh` does this for the local stack)"
        )
    if not cap["pgaudit_preloaded"]:
        return (
            "read auditing is off: pgaudit is installed but not in shared_preload_libraries (the local stack adds "
            "it when it starts PostgreSQL: `hub stack down && hub stack up`; elsewhere add it and restart)"
        )
    if not cap["logging_collector"] or "jsonlog" not in cap["log_destination"]:
        return (
            "reads are audited into the server log, but not as jsonlog files this command can read back "
            "(set logging_collector = on and add jsonlog to log_destination)"
        )
    return None


async def report(conn: asyncpg.Connection, org: str | None, since: datetime | None, actor: str) -> AuditReport:
    await catalog.ensure_catalog(conn)
    await shared.record_expiries(conn, actor)
    cap = await conn.fetchrow("SELECT * FROM hub.audit_capability()")
    why = why_not_auditing(cap)
    out = AuditReport(reading=why is None, why_not=why)
    if why is None:
        lines = await conn.fetch("SELECT * FROM hub.pgaudit_lines(coalesce($1::timestamptz, '-infinity'))", since)
        out.reads, out.refused = summarise(list(lines), org)
    agreements = await shared.agreements(conn)
    for e in await shared.events(conn, since):
        row = agreements.get(e["agreement_id"])
        spec = row.spec if row else {}
        consumers = spec.get("consumers")
        if org and not (consumers == "everyone" or org in (consumers or []) or spec.get("provider") == org):
            continue
        out.events.append(
            {
                "at": e["at"],
                "agreement": e["agreement_id"],
                "action": e["action"],
                "actor": e["actor"],
                "db_role": e["db_role"],
                "reason": e["reason"],
            }
        )
    return out
