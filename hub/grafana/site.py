"""Everything one Grafana should hold, decided from the policy: pure, from the world `hub explain` decides over.

One Grafana organisation per hub organisation (partners included), with one datasource that logs in as the
organisation's Grafana login (a member of org_<id> whose sessions read as org_<id>), a folder of the feeds it
publishes, a folder of what is shared with it, and a dashboard for each thing `readable()` says it may read now.
Grafana's own first organisation is the operators': the overview, over the hub's counters, as the operators' role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from hub.agreement import names
from hub.agreement.policy import World, readable
from hub.grafana.dashboards import FeedMeta, feed_dashboard, grant_dashboard, overview_dashboard
from hub.grafana.model import Dashboard, Datasource, Folder, GrafanaOrg, PrometheusSource, Site, uid

OPERATORS_DATASOURCE = "hub-timescaledb"  # the uid deploy/grafana/provisioning gives the operators' datasource
OPERATORS_PROMETHEUS = "hub-prometheus"  # the uid of the operators' Prometheus datasource (same in deploy/)
OPERATORS_FOLDER = "civic-hub"
OPERATORS_PASSWORD_ENV = "GRAFANA_DB_PASSWORD"  # noqa: S105 (a variable's name, as docker-compose.yml has it)


@dataclass(frozen=True)
class DatabaseTarget:
    """How Grafana reaches the database, and what it is."""

    host: str  # host:port as Grafana sees it
    database: str
    sslmode: str
    timescaledb: bool
    postgres_version: int
    operators_role: str


def password_env(org: str) -> str:
    """The environment variable that holds the password of an organisation's Grafana login."""
    return "HUB_GRAFANA_DB_PASSWORD_" + org.upper()


def datasource_of(org: str | None, db: DatabaseTarget) -> Datasource:
    if org is None:
        return Datasource(
            OPERATORS_DATASOURCE, "Hub TimescaleDB", None, db.operators_role, OPERATORS_PASSWORD_ENV,
            db.host, db.database, db.sslmode, db.timescaledb, db.postgres_version, 5,
        )  # fmt: skip
    return Datasource(
        uid("ds", org), f"Hub database ({org})", org, names.grafana_login(org), password_env(org),
        db.host, db.database, db.sslmode, db.timescaledb, db.postgres_version, 4,
    )  # fmt: skip


def build_site(
    world: World,
    feeds: Mapping[str, FeedMeta],
    db: DatabaseTarget,
    at: datetime,
    prometheus_url: str | None = None,
) -> Site:
    """The dashboards every organisation may see at `at` (grants not yet or no longer in force get none).

    With `prometheus_url` the operators' organisation also gets a Prometheus datasource and the overview its
    rate panels; without, neither, and a note says so."""
    orgs = [GrafanaOrg(None, "Hub operators")]
    datasources = [datasource_of(None, db)]
    folders = [Folder(OPERATORS_FOLDER, "Civic hub", None)]
    prometheus = PrometheusSource(OPERATORS_PROMETHEUS, "Hub Prometheus", prometheus_url) if prometheus_url else None
    overview = overview_dashboard(
        ds=OPERATORS_DATASOURCE, folder=OPERATORS_FOLDER, prometheus=prometheus.uid if prometheus else None
    )
    dashboards: list[Dashboard] = [overview]
    notes: list[str] = []
    if prometheus is None:
        notes.append("operators: no HUB_GRAFANA_PROMETHEUS_URL, so no Prometheus datasource and no rate panels")
    for org in sorted(world.orgs.values(), key=lambda o: o.id):
        ds = datasource_of(org.id, db)
        orgs.append(GrafanaOrg(org.id, org.name))
        datasources.append(ds)
        published = Folder(uid("published", org.id), "Our feeds", org.id)
        shared = Folder(uid("shared", org.id), "Shared with us", org.id)
        used: set[str] = set()
        for access in readable(world, org.id, at):
            feed = feeds.get(access.feed)
            if feed is None:
                notes.append(f"{org.id}: {access.feed} has no schema in the catalog; no dashboard")
                continue
            if access.agreement is None:
                dashboards.append(feed_dashboard(feed, access, ds=ds.uid, folder=published.uid))
                used.add(published.uid)
            else:
                dashboards.append(grant_dashboard(org.id, feed, access, ds=ds.uid, folder=shared.uid))
                used.add(shared.uid)
        folders += [f for f in (published, shared) if f.uid in used]
    return Site(tuple(orgs), tuple(datasources), tuple(folders), tuple(dashboards), tuple(notes), prometheus)
