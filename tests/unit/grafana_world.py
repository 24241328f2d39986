"""A small world for the dashboard tests: a partner with two feeds (one with coordinates and a text field), two
organisations, and agreements that grant raw fields with a delay, aggregates only, and pseudonymised open data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.agreement.grants import FeedInfo, resolve
from hub.agreement.loader import parse_agreements
from hub.agreement.policy import World
from hub.grafana.dashboards import FeedMeta
from hub.grafana.model import Site
from hub.grafana.site import DatabaseTarget, build_site
from hub.grafana.sql import Field
from tests.unit.policy_world import AGREEMENTS, ORGS

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
AIR_FIELDS = (
    Field("pm25", "number", "PM2.5 in µg/m³"),
    Field("no2", "number"),
    Field("battery_v", "number"),
    Field("label", "text"),
    Field("lat", "number"),
    Field("lon", "number"),
)
FEEDS = {
    "lab.air": FeedMeta("lab", "air", "Air quality", "ODbL-1.0", AIR_FIELDS),
    "lab.noise": FeedMeta("lab", "noise", "Noise", "CC0-1.0", (Field("laeq", "number"),)),
}
DB = DatabaseTarget("timescaledb:5432", "hub", "disable", False, 1500, "hub_grafana")


def world(revoked: tuple[str, ...] = ()) -> World:
    infos = {
        k: FeedInfo(
            f.provider,
            f.name,
            tuple(x.name for x in f.fields),
            frozenset(x.name for x in f.fields if x.kind == "number"),
            timedelta(minutes=15),
        )
        for k, f in FEEDS.items()
    }
    states = tuple(
        resolve(
            a.agreement,
            infos,
            file="agreements/lab.yaml",
            revoked=(NOW - timedelta(days=1), "alice", "ended") if a.agreement.id in revoked else None,
        )
        for a in parse_agreements(AGREEMENTS, "agreements/lab.yaml")
    )
    return World(ORGS, infos, states)


PROMETHEUS_URL = "http://prometheus:9090"  # as docker-compose.yml sets HUB_GRAFANA_PROMETHEUS_URL


def site(at: datetime = NOW, revoked: tuple[str, ...] = (), prometheus_url: str | None = PROMETHEUS_URL) -> Site:
    return build_site(world(revoked), FEEDS, DB, at, prometheus_url)
