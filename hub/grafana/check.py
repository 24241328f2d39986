"""`hub grafana check`: every panel's SQL, expanded as Grafana expands it, run as the login its datasource uses.

What a dashboard shows is only what its organisation's role can select; this proves each query runs and
returns the columns its panel expects, without a Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from hub.db import DATABASE_ERRORS, redact
from hub.errors import HubError
from hub.grafana.database import login_url
from hub.grafana.macros import expand
from hub.grafana.model import Dashboard, Datasource, PanelQuery, Site


@dataclass(frozen=True)
class Outcome:
    columns: tuple[str, ...] | None
    rows: int
    sqlstate: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class QueryRun:
    dashboard: Dashboard
    query: PanelQuery
    role: str
    outcome: Outcome

    @property
    def ok(self) -> bool:
        return self.outcome.error is None and self.outcome.columns == self.query.columns


async def run_query(
    conn: asyncpg.Connection, query: PanelQuery, start: datetime, end: datetime, interval: timedelta, timescaledb: bool
) -> Outcome:
    sql = expand(query.sql, start, end, interval, timescaledb=timescaledb)
    try:
        stmt = await conn.prepare(sql)
        columns = tuple(a.name for a in stmt.get_attributes())
        rows = await stmt.fetch()
    except asyncpg.PostgresError as exc:
        return Outcome(None, 0, exc.sqlstate, str(exc).splitlines()[0])
    return Outcome(columns, len(rows))


async def connect_as(database_url: str, ds: Datasource, passwords: dict[str, str]) -> asyncpg.Connection:
    password = passwords.get(ds.password_env)
    if not password:
        raise HubError(f"no password for {ds.user} ({ds.password_env}): run `hub grafana build` or `sync` first")
    try:
        return await asyncpg.connect(login_url(database_url, ds.user, password), timeout=10)
    except DATABASE_ERRORS as exc:
        raise HubError(f"{ds.user} cannot log in to {redact(database_url)}: {exc}") from None


async def check_site(
    database_url: str, site: Site, passwords: dict[str, str], *, hours: float = 6.0, orgs: set[str | None] | None = None
) -> list[QueryRun]:
    """Every query of every dashboard (of `orgs`, when given), as its organisation's datasource login."""
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    interval = timedelta(minutes=1)
    out: list[QueryRun] = []
    for ds in site.datasources:
        if orgs is not None and ds.org not in orgs:
            continue
        dashboards = site.dashboards_of(ds.org)
        if not dashboards:
            continue
        conn = await connect_as(database_url, ds, passwords)
        try:
            for d in dashboards:
                for q in d.queries:
                    outcome = await run_query(conn, q, start, end, interval, ds.timescaledb)
                    out.append(QueryRun(d, q, ds.user, outcome))
        finally:
            await conn.close()
    return out
