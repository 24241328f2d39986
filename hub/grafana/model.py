"""What `hub grafana build` makes, as plain data: Grafana organisations with their datasource, folders and
dashboards, and every query a panel sends (with the columns it expects back)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

PG_PLUGIN = "grafana-postgresql-datasource"  # the PostgreSQL plugin's id since Grafana 10 ("postgres" before)
PROM_PLUGIN = "prometheus"
OPERATORS_DIR = "operators"
MANAGED_TAG = "hub-generated"  # every generated dashboard carries it: `hub grafana sync` deletes only those


def uid(*parts: str) -> str:
    """A Grafana uid (at most 40 of a-z 0-9 _ -) from stable parts: readable as far as it fits, unique by a hash.

    Never random: building twice must give the same files, and a sync must find what it made before."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:8]
    return f"{'-'.join(parts)[:31]}-{digest}"


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: raw SQL with Grafana's PostgreSQL macros, and the columns it returns."""

    panel: str
    ref_id: str
    sql: str
    format: str  # "time_series" | "table"
    columns: tuple[str, ...]
    reads: str  # the object it selects from, as written in the SQL (schema.name)


@dataclass(frozen=True)
class GrafanaOrg:
    """One Grafana organisation: the operators' (Grafana's own first organisation) or one per hub organisation."""

    hub_org: str | None  # None: the operators
    title: str

    @property
    def name(self) -> str:
        """Its name in Grafana: the hub id, which never changes (a display name may)."""
        return self.hub_org or "Main Org."

    @property
    def directory(self) -> str:
        return OPERATORS_DIR if self.hub_org is None else f"org-{self.hub_org}"


@dataclass(frozen=True)
class Datasource:
    uid: str
    name: str
    org: str | None
    user: str  # the database role it logs in as
    password_env: str  # the environment variable holding its password (provisioning expands it)
    host: str
    database: str
    sslmode: str
    timescaledb: bool
    postgres_version: int  # 1500, 1600: what Grafana's query editor assumes
    max_open_conns: int

    def settings(self) -> dict[str, Any]:
        """Everything but the password, as both provisioning files and the HTTP API take it."""
        return {
            "uid": self.uid,
            "name": self.name,
            "type": PG_PLUGIN,
            "access": "proxy",
            "url": self.host,
            "user": self.user,
            "isDefault": True,
            "jsonData": {
                "database": self.database,
                "sslmode": self.sslmode,
                "postgresVersion": self.postgres_version,
                "timescaledb": self.timescaledb,
                "maxOpenConns": self.max_open_conns,
                "maxIdleConns": 1,
                "connMaxLifetime": 14400,
            },
        }


@dataclass(frozen=True)
class PrometheusSource:
    """The operators' second datasource: the Prometheus that scrapes every hub process (no password)."""

    uid: str
    name: str
    url: str

    def settings(self) -> dict[str, Any]:
        """As both provisioning files and the HTTP API take it."""
        return {
            "uid": self.uid,
            "name": self.name,
            "type": PROM_PLUGIN,
            "access": "proxy",
            "url": self.url,
            "isDefault": False,
            "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},  # the scrape interval of deploy/prometheus
        }


@dataclass(frozen=True)
class Folder:
    uid: str
    title: str
    org: str | None


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    org: str | None
    folder: str  # its folder's uid
    kind: str  # "feed" (a provider's own), "grant" (what an agreement gives), "overview" (operators)
    model: dict[str, Any]  # the dashboard JSON
    queries: tuple[PanelQuery, ...]
    feed: str | None = None  # provider.feed
    form: str | None = None
    agreement: str | None = None

    def text(self) -> str:
        """The file's bytes: sorted keys and a fixed indent, so the same dashboard always writes the same file."""
        return json.dumps(self.model, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Site:
    """Everything generated for one Grafana."""

    orgs: tuple[GrafanaOrg, ...]
    datasources: tuple[Datasource, ...]
    folders: tuple[Folder, ...]
    dashboards: tuple[Dashboard, ...]
    notes: tuple[str, ...] = field(default=())
    prometheus: PrometheusSource | None = None  # the operators' organisation only

    def org(self, hub_org: str | None) -> GrafanaOrg:
        return next(o for o in self.orgs if o.hub_org == hub_org)

    def datasource(self, hub_org: str | None) -> Datasource:
        return next(d for d in self.datasources if d.org == hub_org)

    def folders_of(self, hub_org: str | None) -> list[Folder]:
        return [f for f in self.folders if f.org == hub_org]

    def dashboards_of(self, hub_org: str | None) -> list[Dashboard]:
        return [d for d in self.dashboards if d.org == hub_org]
