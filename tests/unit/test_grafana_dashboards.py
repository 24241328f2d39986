"""Dashboards generated from the policy: what each organisation's dashboards read, that they are valid for the
SDK's models of Grafana 11.2 and hold together as Grafana lays them out, and that a rebuild gives the same bytes."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

from hub.agreement.policy import readable
from hub.grafana import files
from hub.grafana.macros import expand
from hub.grafana.model import MANAGED_TAG, PG_PLUGIN, PROM_PLUGIN, Dashboard, uid
from tests.unit.grafana_world import NOW, site, world

UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")


def panels(d: Dashboard) -> list[dict]:
    return [p for p in d.model["panels"] if p["type"] != "row"]


def test_every_dashboard_is_read_back_unchanged_by_the_sdks_models_of_grafana_11_2() -> None:
    register_default_plugins()
    for d in site().dashboards:
        again = json.loads(json.dumps(DashboardModel.from_json(copy.deepcopy(d.model)), cls=JSONEncoder))
        assert again == d.model, d.uid  # an unknown key would be dropped, a missing default added


def test_dashboards_hold_together_as_grafana_lays_them_out() -> None:
    s = site()
    for d in s.dashboards:
        ds = s.datasource(d.org).uid
        assert UID.fullmatch(d.uid) and d.model["uid"] == d.uid and MANAGED_TAG in d.model["tags"]
        assert d.model["schemaVersion"] == 39 and d.model["editable"] is False
        ids = [p["id"] for p in d.model["panels"]]
        assert len(ids) == len(set(ids)), d.uid
        cells: set[tuple[int, int]] = set()
        for p in d.model["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (d.uid, p["title"])
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not mine & cells, (d.uid, p["title"])  # no two panels overlap
            cells |= mine
        for p in panels(d):
            if p["type"] == "text":
                continue
            if p["datasource"]["type"] == PROM_PLUGIN:  # the overview's rates: operators only
                assert d.kind == "overview" and s.prometheus is not None
                assert p["datasource"] == {"type": PROM_PLUGIN, "uid": s.prometheus.uid}
                assert all(t["datasource"] == p["datasource"] and t["expr"] and t["range"] for t in p["targets"])
                assert [t["refId"] for t in p["targets"]] == ["A", "B"][: len(p["targets"])]
                continue
            assert p["datasource"] == {"type": PG_PLUGIN, "uid": ds}
            assert [t["datasource"]["uid"] for t in p["targets"]] == [ds]
            assert p["targets"][0]["rawQuery"] is True and p["targets"][0]["editorMode"] == "code"
        sent = [t["rawSql"] for p in panels(d) for t in p.get("targets", []) if "rawSql" in t]
        assert sent == [q.sql for q in d.queries]
    titles = [(d.org, d.folder, d.title) for d in s.dashboards]
    assert len(titles) == len(set(titles))  # Grafana wants titles unique per folder


def test_an_organisations_dashboards_read_only_what_the_policy_names_with_the_granted_fields() -> None:
    s, w = site(), world()
    for org in ("city", "research", "lab"):
        objects = {a.object for a in readable(w, org, NOW)}
        for d in s.dashboards_of(org):
            stats = {q.reads for q in d.queries if q.reads.startswith("hub_stats.")}
            assert {q.reads for q in d.queries} - stats <= objects
            assert not stats or (d.kind == "feed" and d.org == "lab")  # only a provider reads its counters
    (city_air,) = [d for d in s.dashboards_of("city") if d.feed == "lab.air"]
    sql = "\n".join(q.sql for q in city_air.queries)
    assert '"pm25"' in sql and '"no2"' in sql
    assert not any(f in sql for f in ('"battery_v"', '"label"', '"lat"', "hub."))
    assert "geomap" not in {p["type"] for p in panels(city_air)}  # no coordinates granted, no map
    (own_air,) = [d for d in s.dashboards_of("lab") if d.feed == "lab.air" and d.kind == "feed"]
    assert "geomap" in {p["type"] for p in panels(own_air)} and "bargauge" in {p["type"] for p in panels(own_air)}


def test_aggregate_only_grants_get_aggregate_panels_and_pseudonyms_are_shown_as_such() -> None:
    s = site()
    (agg,) = [d for d in s.dashboards_of("research") if d.form == "aggregate"]
    assert {q.reads for q in agg.queries} == {"org_research.lab__air__agg"}
    assert all("device_id" not in q.sql and "DISTINCT ON" not in q.sql for q in agg.queries)
    assert {p["type"] for p in panels(agg)} == {"text", "stat", "timeseries", "table"}
    assert "aggregates in 1h buckets of at least 3 devices" in agg.model["description"]
    (noise,) = [d for d in s.dashboards_of("research") if d.feed == "lab.noise"]
    assert {q.reads for q in noise.queries} == {"open_data.lab__noise"}
    latest = next(q for q in noise.queries if q.panel.startswith("Latest row"))
    assert latest.columns[0] == "device_pseudonym" and "device_id" not in latest.sql
    assert latest.panel == "Latest row per pseudonymised device"
    about = next(p for p in panels(noise) if p["type"] == "text")["options"]["content"]
    assert "**pseudonyms**" in about


def test_grants_not_in_force_get_no_dashboard() -> None:
    ended = site(at=datetime(2026, 12, 2, tzinfo=UTC))
    assert [d.feed for d in ended.dashboards_of("city")] == ["lab.noise"]
    revoked = site(revoked=("air_research",))
    assert [d.form for d in revoked.dashboards_of("research")] == ["raw"]


def test_uids_are_stable_and_a_rebuild_writes_the_same_bytes() -> None:
    assert uid("feed", "lab", "air") == "feed-lab-air-96a87eb7"
    assert uid("grant", "research", "lab", "air", "aggregate") == "grant-research-lab-air-aggregat-e65f3d84"
    one = files.render(site(), "/var/lib/grafana/dashboards", {"city": 2}).files
    two = files.render(site(), "/var/lib/grafana/dashboards", {"city": 2}).files
    assert one == two
    assert sum(1 for p in one if p.endswith(".json") and p != "manifest.json") == len(site().dashboards)


def test_provisioning_names_passwords_by_variable_and_only_organisations_grafana_has() -> None:
    built = files.render(site(), "/dash", {"city": 2})
    assert set(built.unprovisioned) == {"lab", "research"}
    ds = built.files["provisioning/datasources/hub.yaml"]
    assert "password: ${GRAFANA_DB_PASSWORD}" in ds and "password: ${HUB_GRAFANA_DB_PASSWORD_CITY}" in ds
    assert "user: hub_grafana_city" in ds and "orgId: 2" in ds and "hub_grafana_lab" not in ds
    providers = built.files["provisioning/dashboards/hub.yaml"]
    assert "path: /dash/org-city/shared-city-8d01ad3e" in providers and "path: /dash/operators/civic-hub" in providers
    assert "org-lab" not in providers


def test_macros_expand_as_grafanas_postgresql_datasource_does() -> None:
    start, end = datetime(2026, 11, 27, 3, 0, tzinfo=UTC), datetime(2026, 11, 27, 9, 0, 0, 500000, tzinfo=UTC)
    sql = 'SELECT $__timeGroupAlias("time", $__interval), x FROM t WHERE $__timeFilter("time") AND a < $__timeTo()'
    assert expand(sql, start, end, timedelta(minutes=5), timescaledb=False) == (
        'SELECT floor(extract(epoch from "time")/300)*300 AS "time", x FROM t WHERE "time" BETWEEN '
        "'2026-11-27T03:00:00Z' AND '2026-11-27T09:00:00.5Z' AND a < '2026-11-27T09:00:00.5Z'"
    )
    assert expand("$__timeGroup(at, 1h)", start, end, timedelta(minutes=1), timescaledb=True) == (
        "time_bucket('3600.000s',at)"
    )
