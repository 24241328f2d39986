"""Dashboards built from the example agreements, checked against the real database (Grafana cannot run here):
every panel's SQL, expanded as Grafana expands it, runs as its organisation's Grafana login and returns the
columns its panel expects; another organisation's login is refused what no grant gives it; a revoked grant's
dashboard leaves the build."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from hub.access.audit import report as audit_report
from hub.control.apply import apply
from hub.control.share_checks import broken_invariants
from hub.grafana import passwords
from hub.grafana.check import QueryRun, check_site, connect_as, run_query
from hub.grafana.database import read_site
from hub.grafana.model import Site
from hub.settings import HubSettings
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.local import cli_env
from tests.integration.examples import SOURCES, hub
from tests.integration.support import Device, eventually, running_ingest, running_land, unique

PROMETHEUS_URL = "http://prometheus:9090"  # as docker-compose.yml sets it; nothing is asked of it here


def build_env(settings: HubSettings) -> dict[str, str]:
    """`hub grafana build`'s environment: the stack's, and a Prometheus for the overview's rate panels."""
    return {**cli_env(settings), "HUB_GRAFANA_PROMETHEUS_URL": PROMETHEUS_URL}


@dataclass
class Built:
    settings: HubSettings
    out: Path
    first: subprocess.CompletedProcess[str]
    site: Site
    secrets: dict[str, str]


async def _land_and_refuse(settings: HubSettings) -> str:
    """One reading lands through the pipeline and one message is refused, so the counters have something."""
    device = unique("air")
    dev = Device(settings, "uni_air_lab")
    payload = {"t": int(time.time() * 1000), "pm2_5": 12.5, "pm10": 20.0, "temp_f": 60.0, "rh": 40.0}
    url = settings.endpoints().database_url
    conn = await asyncpg.connect(url)
    try:
        topic = f"partners/uni_air_lab/stations/{device}/air"
        async with running_land(settings), running_ingest(settings):
            dev.publish(topic, json.dumps(payload))
            dev.publish(topic, b"not json")
            await dev.wait_acks(2)

            async def landed() -> bool:
                rows = await conn.fetchval("SELECT count(*) FROM uni_air_lab.air_quality WHERE device_id = $1", device)
                dead = await conn.fetchval("SELECT count(*) FROM hub.dead_letters WHERE mqtt_topic = $1", topic)
                return bool(rows and dead)

            assert await eventually(landed, 60.0, 0.2)
    finally:
        dev.close()
        await conn.close()
    return device


@pytest.fixture(scope="module")
async def built(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Built]:
    settings, _ = examples
    await _land_and_refuse(settings)
    out = tmp_path_factory.mktemp("grafana")
    first = hub(build_env(settings), "grafana", "build", "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        site = await read_site(conn, settings.replace(grafana_prometheus_url=PROMETHEUS_URL))
    finally:
        await conn.close()
    yield Built(settings, out, first, site, passwords.load(passwords.default_path(settings)))


EXPECTED = {
    # (organisation, kind, feed, form): every example feed for its provider, every grant, open data for all
    (None, "overview", None, None),
    ("uni_air_lab", "feed", "uni_air_lab.air_quality", "raw"),
    ("uni_air_lab", "feed", "uni_air_lab.noise_levels", "raw"),
    ("uni_air_lab", "grant", "uni_air_lab.noise_levels", "aggregate"),
    ("uni_air_lab", "grant", "city_transport.traffic_counts", "aggregate"),
    ("uni_air_lab", "grant", "city_transport.parking_occupancy", "aggregate"),
    ("city_transport", "feed", "city_transport.parking_occupancy", "raw"),
    ("city_transport", "feed", "city_transport.traffic_counts", "raw"),
    ("city_transport", "grant", "uni_air_lab.noise_levels", "aggregate"),
    ("voltcharge", "feed", "voltcharge.charger_status", "raw"),
    ("voltcharge", "grant", "uni_air_lab.noise_levels", "aggregate"),
    ("city_data_team", "grant", "uni_air_lab.air_quality", "raw"),
    ("city_data_team", "grant", "city_transport.parking_occupancy", "raw"),
    ("city_data_team", "grant", "voltcharge.charger_status", "raw"),
    ("city_data_team", "grant", "uni_air_lab.noise_levels", "aggregate"),
    ("health_research", "grant", "uni_air_lab.air_quality", "raw"),
    ("health_research", "grant", "city_transport.traffic_counts", "aggregate"),
    ("health_research", "grant", "city_transport.parking_occupancy", "aggregate"),
    ("health_research", "grant", "uni_air_lab.noise_levels", "aggregate"),
    ("mobility_startup", "grant", "city_transport.traffic_counts", "aggregate"),
    ("mobility_startup", "grant", "city_transport.parking_occupancy", "aggregate"),
    ("mobility_startup", "grant", "uni_air_lab.noise_levels", "aggregate"),
}


EXAMPLE_ORGS = {o for o, *_ in EXPECTED}
EXAMPLE_PROVIDERS = {"", "uni_air_lab", "city_transport", "voltcharge"}  # other tests' partners share the stack


def test_build_gives_every_feed_organisation_and_grant_a_dashboard_and_again_the_same_bytes(built: Built) -> None:
    got = {
        (d.org, d.kind, d.feed, d.form)
        for d in built.site.dashboards
        if d.org in EXAMPLE_ORGS and (d.feed or "").split(".")[0] in EXAMPLE_PROVIDERS
    }
    assert got == EXPECTED
    before = {p: p.read_bytes() for p in built.out.rglob("*") if p.is_file()}
    again = hub(build_env(built.settings), "grafana", "build", "--out", str(built.out))
    assert again.returncode == 0, again.stderr
    assert "(0 files written, 0 removed)" in again.stdout
    assert {p: p.read_bytes() for p in built.out.rglob("*") if p.is_file()} == before
    for org in EXAMPLE_ORGS - {None}:
        assert f"logs in as hub_grafana_{org}, reads as org_{org}" in built.first.stdout
    # No password reaches any file of the build; the passwords file is the owner's only.
    secrets = passwords.default_path(built.settings)
    assert secrets.stat().st_mode & 0o777 == 0o600
    for path, data in before.items():
        for value in built.secrets.values():
            assert value.encode() not in data, path
    checked = hub(cli_env(built.settings), "grafana", "check", "--org", "city_data_team", "--org", "operators")
    assert checked.returncode == 0 and " panel queries ran as their organisation's login" in checked.stdout, (
        checked.stderr
    )
    datasources = (built.out / "provisioning" / "datasources" / "hub.yaml").read_text()
    assert "password: ${GRAFANA_DB_PASSWORD}" in datasources and "orgId: 1" in datasources
    # HUB_GRAFANA_PROMETHEUS_URL gives the operators a Prometheus datasource and the overview its rate panels
    assert "uid: hub-prometheus" in datasources and f"url: {PROMETHEUS_URL}" in datasources
    assert f"datasource hub-prometheus reads {PROMETHEUS_URL}" in built.first.stdout
    overview = (built.out / "operators" / "civic-hub" / "hub-overview.json").read_text()
    assert "rate(hub_land_rows_total[$__rate_interval])" in overview and '"uid": "hub-prometheus"' in overview


async def test_every_panel_query_runs_as_its_organisations_login_with_the_columns_it_expects(built: Built) -> None:
    runs = await check_site(built.settings.endpoints().database_url, built.site, built.secrets, orgs=EXAMPLE_ORGS)
    assert {(r.dashboard.org, r.role) for r in runs} >= {
        ("city_data_team", "hub_grafana_city_data_team"),
        (None, "hub_grafana"),
    }
    failed = [(r.dashboard.uid, r.query.panel, r.outcome) for r in runs if not r.ok]
    assert failed == []
    # Every panel over a feed's data has rows (four hours of them were seeded); so do the counters of the feed
    # a message just landed in and was refused from, and the operators' overview.
    empty = [(r.dashboard.uid, r.query.panel) for r in runs if r.outcome.rows == 0 and _should_have_rows(r)]
    assert empty == []
    pseudonymised = next(
        r
        for r in runs
        if r.dashboard.org == "health_research"
        and r.dashboard.feed == "uni_air_lab.air_quality"
        and r.query.columns[0] == "device_pseudonym"
    )
    assert pseudonymised.ok
    city_air = [
        r for r in runs if r.dashboard.org == "city_data_team" and r.dashboard.feed == "uni_air_lab.air_quality"
    ]
    assert all("battery_v" not in r.query.sql and "temperature_c" not in r.query.sql for r in city_air)
    aggregates_only = [r for r in runs if r.dashboard.org == "mobility_startup"]
    assert aggregates_only and all(r.query.reads.endswith("__agg") for r in aggregates_only)


def _should_have_rows(r: QueryRun) -> bool:
    if r.query.reads.startswith("hub_stats."):
        return r.dashboard.feed == "uni_air_lab.air_quality"  # the only feed a message went through here
    return r.query.reads != "hub.land_events"  # nothing went wrong on this stack


async def test_another_organisations_login_is_refused_what_no_grant_gives_it(built: Built) -> None:
    url = built.settings.endpoints().database_url
    end = datetime.now(UTC)
    refused = 0
    for intruder in ("mobility_startup", "city_data_team", None):
        ds = built.site.datasource(intruder)
        conn = await connect_as(url, ds, built.secrets)
        try:
            for d in built.site.dashboards:
                if (
                    d.org == intruder
                    or d.org not in EXAMPLE_ORGS
                    or (d.feed or ".").split(".")[0] not in EXAMPLE_PROVIDERS
                ):
                    continue
                for q in d.queries:
                    outcome = await run_query(
                        conn, q, end - timedelta(hours=6), end, timedelta(minutes=1), ds.timescaledb
                    )
                    if q.reads.startswith("open_data.") or q.reads == "pg_database_size":
                        # open data: every role may read it, as the policy says; the database's size is
                        # metadata PostgreSQL shows every role (docs/agreements.md, what organisations can see)
                        assert outcome.error is None
                    elif q.reads.startswith("hub_stats."):
                        assert outcome.error is None and outcome.rows == 0, (ds.user, d.uid, q.panel)
                    else:
                        assert outcome.sqlstate == "42501", (ds.user, d.uid, q.panel, outcome)
                        refused += 1
        finally:
            await conn.close()
    assert refused > 100


async def _audited_as_the_organisation(admin: asyncpg.Connection, start: datetime) -> None:
    """`hub audit --org mobility_startup` shows the read its Grafana login made (where pgaudit is loaded)."""
    cap = await admin.fetchrow("SELECT * FROM hub.audit_capability()")
    if not cap["pgaudit_preloaded"]:
        return  # read auditing is off on this server; test_sharing.py says so where it matters
    found = None
    for _ in range(50):  # the log collector writes the lines moments later
        r = await audit_report(admin, "mobility_startup", start, "test-suite")
        found = next((x for x in r.reads if x.object == "org_mobility_startup.voltcharge__charger_status"), None)
        if found:
            break
        await asyncio.sleep(0.1)
    assert found is not None and found.role == "hub_grafana_mobility_startup", r.reads


async def test_grafana_logins_keep_the_sharing_invariants_and_a_revoked_grant_leaves_the_build(
    built: Built, tmp_path: Path
) -> None:
    settings = built.settings
    env = build_env(settings)
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        assert await broken_invariants(conn) == []
    finally:
        await conn.close()
    trial = tmp_path / "trial.yaml"
    trial.write_text(
        "agreements:\n  - {id: grafana_trial, provider: voltcharge, consumers: [mobility_startup],"
        " purpose: Trial, licence: CC-BY-NC-4.0, grants: [{feed: charger_status, fields: [status]}]}\n"
    )
    sources = [*map(Path, SOURCES), trial]
    await apply(settings, sources, broker=LocalBrokerAuth(settings), actor="test-suite")  # its invariants hold
    assert hub(env, "grafana", "build", "--out", str(built.out)).returncode == 0
    manifest = json.loads((built.out / "manifest.json").read_text())
    (entry,) = [
        d
        for o in manifest["organisations"]
        for f in o["folders"]
        for d in f["dashboards"]
        if d["agreement"] == "grafana_trial"
    ]
    path = built.out / entry["file"]
    model = json.loads(path.read_text())
    assert "power_kw" not in path.read_text() and "grafana_trial" in model["tags"]
    admin = await asyncpg.connect(settings.endpoints().database_url)
    start = await admin.fetchval("SELECT now()")
    login = await connect_as(
        settings.endpoints().database_url, built.site.datasource("mobility_startup"), built.secrets
    )
    try:
        assert await login.fetchval("SELECT count(*) FROM voltcharge__charger_status") > 0
        await _audited_as_the_organisation(admin, start)
        revoked = hub(env, "agreements", "revoke", "grafana_trial", "--reason", "trial over")
        assert revoked.returncode == 0, revoked.stderr
        # revocation ended the Grafana login's session too
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await login.fetchval("SELECT 1")
    finally:
        await login.close()
        await admin.close()
    rebuilt = hub(env, "grafana", "build", "--out", str(built.out))
    assert rebuilt.returncode == 0 and "1 removed" in rebuilt.stdout, rebuilt.stdout
    assert not path.exists()
