"""`hub grafana sync`'s requests, checked against the recorded sequence of Grafana HTTP API calls it must send
(no Grafana runs here, and none is faked): a first sync of a new Grafana, a second that only reads, a revoked
grant's dashboard deleted, provisioned objects left alone, and the calls as they leave on the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest
from niquests.adapters import BaseAdapter
from niquests.models import PreparedRequest, Response
from niquests.structures import CaseInsensitiveDict

from hub.errors import AccessDenied, ServerUnavailable
from hub.grafana.sync import Grafana, sync
from hub.grafana.sync_plan import Call, Observed, create_orgs, find_orgs, join, members, reads, writes
from hub.stack.process import free_port
from tests.unit.grafana_world import site

PASSWORDS = {
    "GRAFANA_DB_PASSWORD": "pw-operators",
    "HUB_GRAFANA_DB_PASSWORD_CITY": "pw-city",
    "HUB_GRAFANA_DB_PASSWORD_LAB": "pw-lab",
    "HUB_GRAFANA_DB_PASSWORD_RESEARCH": "pw-research",
}
GRAFANA_IDS = {None: 1, "city": 2, "lab": 3, "research": 4}
SEARCH = "/api/search?type=dash-db&tag=hub-generated&limit=5000"
# A new Grafana: organisations first (by name, then created), then per organisation its datasource (as the
# organisation's Grafana login, with its password), its folders, and its dashboards into them. The operators'
# organisation also gets the Prometheus datasource its overview's rate panels read (no password).
RECORDED_FIRST_SYNC = [
    ("GET", "/api/orgs/name/city", None, None),
    ("GET", "/api/orgs/name/lab", None, None),
    ("GET", "/api/orgs/name/research", None, None),
    ("POST", "/api/orgs", None, "city"),
    ("POST", "/api/orgs", None, "lab"),
    ("POST", "/api/orgs", None, "research"),
    ("GET", "/api/datasources/uid/hub-timescaledb", 1, None),
    ("GET", "/api/datasources/uid/hub-prometheus", 1, None),
    ("GET", "/api/folders", 1, None),
    ("GET", SEARCH, 1, None),
    ("GET", "/api/dashboards/uid/hub-overview", 1, None),
    ("POST", "/api/datasources", 1, "hub-timescaledb as hub_grafana with password"),
    ("POST", "/api/datasources", 1, "hub-prometheus (prometheus) at http://prometheus:9090"),
    ("POST", "/api/folders", 1, "civic-hub: Civic hub"),
    ("POST", "/api/dashboards/db", 1, "hub-overview in civic-hub"),
    ("GET", "/api/datasources/uid/ds-city-102edf8f", 2, None),
    ("GET", "/api/folders", 2, None),
    ("GET", SEARCH, 2, None),
    ("GET", "/api/dashboards/uid/grant-city-lab-air-raw-b2404113", 2, None),
    ("GET", "/api/dashboards/uid/grant-city-lab-noise-raw-63954bfd", 2, None),
    ("POST", "/api/datasources", 2, "ds-city-102edf8f as hub_grafana_city with password"),
    ("POST", "/api/folders", 2, "shared-city-8d01ad3e: Shared with us"),
    ("POST", "/api/dashboards/db", 2, "grant-city-lab-air-raw-b2404113 in shared-city-8d01ad3e"),
    ("POST", "/api/dashboards/db", 2, "grant-city-lab-noise-raw-63954bfd in shared-city-8d01ad3e"),
    ("GET", "/api/datasources/uid/ds-lab-3d7ac680", 3, None),
    ("GET", "/api/folders", 3, None),
    ("GET", SEARCH, 3, None),
    ("GET", "/api/dashboards/uid/feed-lab-air-96a87eb7", 3, None),
    ("GET", "/api/dashboards/uid/grant-lab-lab-noise-raw-3fec8ebe", 3, None),
    ("GET", "/api/dashboards/uid/feed-lab-noise-f47413c0", 3, None),
    ("POST", "/api/datasources", 3, "ds-lab-3d7ac680 as hub_grafana_lab with password"),
    ("POST", "/api/folders", 3, "published-lab-91f2496e: Our feeds"),
    ("POST", "/api/folders", 3, "shared-lab-9a45716b: Shared with us"),
    ("POST", "/api/dashboards/db", 3, "feed-lab-air-96a87eb7 in published-lab-91f2496e"),
    ("POST", "/api/dashboards/db", 3, "grant-lab-lab-noise-raw-3fec8ebe in shared-lab-9a45716b"),
    ("POST", "/api/dashboards/db", 3, "feed-lab-noise-f47413c0 in published-lab-91f2496e"),
    ("GET", "/api/datasources/uid/ds-research-262c3e7c", 4, None),
    ("GET", "/api/folders", 4, None),
    ("GET", SEARCH, 4, None),
    ("GET", "/api/dashboards/uid/grant-research-lab-air-aggregat-e65f3d84", 4, None),
    ("GET", "/api/dashboards/uid/grant-research-lab-noise-raw-3873546b", 4, None),
    ("POST", "/api/datasources", 4, "ds-research-262c3e7c as hub_grafana_research with password"),
    ("POST", "/api/folders", 4, "shared-research-6186c169: Shared with us"),
    ("POST", "/api/dashboards/db", 4, "grant-research-lab-air-aggregat-e65f3d84 in shared-research-6186c169"),
    ("POST", "/api/dashboards/db", 4, "grant-research-lab-noise-raw-3873546b in shared-research-6186c169"),
]


def summary(c: Call) -> str | None:
    b: dict[str, Any] = dict(c.body or {})
    if not b:
        return None
    if c.path == "/api/orgs":
        return str(b["name"])
    if c.path.startswith("/api/datasources") and b["type"] == "prometheus":
        assert "secureJsonData" not in b and b["isDefault"] is False
        return f"{b['uid']} (prometheus) at {b['url']}"
    if c.path.startswith("/api/datasources"):
        with_password = " with password" if b.get("secureJsonData", {}).get("password") else ""
        return f"{b['uid']} as {b['user']}{with_password}"
    if c.path.startswith("/api/folders"):
        return f"{b.get('uid', c.path.rsplit('/', 1)[1])}: {b['title']}"
    if c.path == "/api/dashboards/db":
        assert b["overwrite"] is True and b["message"] == "hub grafana sync"
        return f"{b['dashboard']['uid']} in {b['folderUid']}"
    return json.dumps(b)


def one_sync(s: Any, answers: dict[str | None, Observed], found: dict[str, int | None]) -> list[Call]:
    """The calls of one sync, given what Grafana answers (what `hub.grafana.sync.sync` sends, in order)."""
    calls = find_orgs(s)
    for org_id in [i for i in found.values() if i is not None]:  # organisations there already: is admin a member
        calls += [members(org_id), *join(org_id, "admin", [{"login": "admin"}])]
    calls += create_orgs(s, found)
    for org, org_id in GRAFANA_IDS.items():
        calls += reads(s, org, org_id)
        calls += writes(s, org, org_id, answers.get(org, Observed()), PASSWORDS).calls
    return calls


def as_grafana_holds_it(s: Any) -> dict[str | None, Observed]:
    """What Grafana answers once the first sync's writes are in (it adds id and version to a dashboard)."""
    out = {}
    for org in GRAFANA_IDS:
        ds = s.datasource(org)
        prometheus = s.prometheus.settings() if s.prometheus and org is None else None
        out[org] = Observed(
            datasource={**ds.settings(), "id": 7, "orgId": GRAFANA_IDS[org], "secureJsonFields": {"password": True}},
            prometheus={**prometheus, "id": 8, "orgId": 1, "readOnly": False} if prometheus else None,
            folders={f.uid: f.title for f in s.folders_of(org)},
            managed=[d.uid for d in s.dashboards_of(org)],
            dashboards={
                d.uid: {"dashboard": {**d.model, "id": 40, "version": 1}, "meta": {"folderUid": d.folder}}
                for d in s.dashboards_of(org)
            },
        )
    return out


def test_a_first_sync_creates_organisations_before_anything_that_refers_to_them() -> None:
    calls = one_sync(site(), {}, {"city": None, "lab": None, "research": None})
    assert [(c.method, c.path, c.org, summary(c)) for c in calls] == RECORDED_FIRST_SYNC
    posted = next(c for c in calls if c.path == "/api/datasources" and c.org == 2)
    assert posted.body is not None and posted.body["secureJsonData"] == {"password": "pw-city"}
    assert posted.redacted().body == {**posted.body, "secureJsonData": {"password": "<redacted>"}}


def test_a_second_sync_only_reads() -> None:
    s = site()
    calls = one_sync(s, as_grafana_holds_it(s), {"city": 2, "lab": 3, "research": 4})
    assert {c.method for c in calls} == {"GET"}
    assert [c.path for c in calls][3:6] == ["/api/orgs/2/users", "/api/orgs/3/users", "/api/orgs/4/users"]


def test_a_revoked_grant_s_dashboard_is_deleted_and_nothing_else_changes() -> None:
    before = site()
    after = site(revoked=("air_research",))
    calls = one_sync(after, as_grafana_holds_it(before), {"city": 2, "lab": 3, "research": 4})
    assert [(c.method, c.path, c.org) for c in calls if c.method != "GET"] == [
        ("DELETE", "/api/dashboards/uid/grant-research-lab-air-aggregat-e65f3d84", 4)
    ]


def test_what_grafana_provisions_from_files_is_left_alone_and_a_new_password_is_sent() -> None:
    s = site()
    seen = as_grafana_holds_it(s)[None]
    seen.datasource = {**(seen.datasource or {}), "readOnly": True, "url": "elsewhere:5432"}
    seen.prometheus = {**(seen.prometheus or {}), "readOnly": True, "url": "http://elsewhere:9090"}
    seen.dashboards = {"hub-overview": {"dashboard": {"uid": "hub-overview"}, "meta": {"provisioned": True}}}
    plan = writes(s, None, 1, seen, PASSWORDS)
    assert plan.calls == [] and len(plan.notes) == 3
    city = as_grafana_holds_it(s)["city"]
    (put,) = writes(s, "city", 2, city, PASSWORDS, rotated=frozenset({"hub_grafana_city"})).calls
    assert (put.method, put.path) == ("PUT", "/api/datasources/uid/ds-city-102edf8f")
    assert put.body is not None and put.body["secureJsonData"] == {"password": "pw-city"}
    unknown = writes(s, "city", 2, Observed(), {}).notes
    assert any("no password for hub_grafana_city" in n for n in unknown)


def test_the_operators_prometheus_datasource_follows_its_url_and_is_absent_without_one() -> None:
    moved = site(prometheus_url="http://metrics.example:9090")
    seen = as_grafana_holds_it(site())[None]
    (put,) = writes(moved, None, 1, seen, PASSWORDS).calls
    assert (put.method, put.path, put.org) == ("PUT", "/api/datasources/uid/hub-prometheus", 1)
    assert put.body is not None and put.body["url"] == "http://metrics.example:9090"
    bare = site(prometheus_url=None)
    assert "/api/datasources/uid/hub-prometheus" not in [c.path for c in reads(bare, None, 1)]
    first = writes(bare, None, 1, Observed(), PASSWORDS).calls
    assert [c.body["uid"] for c in first if c.path == "/api/datasources" and c.body] == ["hub-timescaledb"]
    assert all("hub-prometheus" not in c.path for c in reads(site(), "city", 2))  # the operators' only


def test_the_admin_joins_an_organisation_someone_else_created_before_it_writes_there() -> None:
    assert members(2) == Call("GET", "/api/orgs/2/users")
    (call,) = join(2, "admin", [{"login": "alice", "role": "Admin"}])
    assert (call.method, call.path, call.org, call.body) == (
        "POST", "/api/orgs/2/users", None, {"loginOrEmail": "admin", "role": "Admin"},
    )  # fmt: skip
    assert join(2, "admin", [{"login": "admin", "role": "Admin"}]) == []


class _Recorder(BaseAdapter):
    """Keeps every request grafana-client sends and answers 404 to reads, 200 {} otherwise: a transport, no server."""

    def __init__(self, refuse_writes: int | None = None) -> None:
        super().__init__()
        self.sent: list[PreparedRequest] = []
        self.refuse_writes = refuse_writes

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        self.sent.append(request)
        r = Response()
        r.status_code = 404 if request.method == "GET" else (self.refuse_writes or 200)
        r.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        r._content = b'{"message": "not found"}' if r.status_code == 404 else b"{}"
        if self.refuse_writes:
            r._content = b'{"message": "Permission denied"}'
        r.url = request.url
        r.request = request
        r.raw = type("NoRaw", (), {"_original_response": None, "release_conn": lambda self: None})()
        return r

    def close(self) -> None:
        pass


def test_each_call_leaves_with_its_organisation_header_and_the_chosen_authentication() -> None:
    for credential, scheme in ((("admin", "secret"), "Basic"), ("glsa_token", "Bearer")):
        grafana = Grafana("http://grafana.invalid:3000", credential)
        recorder = _Recorder()
        grafana.api.client.s.mount("http://", recorder)
        assert grafana.send(Call("GET", "/api/dashboards/uid/x", 3)) is None  # a read that finds nothing
        grafana.send(Call("POST", "/api/folders", 3, {"uid": "f", "title": "F"}))
        grafana.send(Call("POST", "/api/orgs", None, {"name": "city"}))
        (get, post, org) = recorder.sent
        assert (get.method, get.path_url, get.headers["X-Grafana-Org-Id"]) == ("GET", "/api/dashboards/uid/x", "3")
        assert json.loads(post.body or b"") == {"uid": "f", "title": "F"} and post.headers["X-Grafana-Org-Id"] == "3"
        assert "X-Grafana-Org-Id" not in org.headers
        assert all(str(r.headers["Authorization"]).startswith(scheme + " ") for r in recorder.sent)


def test_a_refusal_or_an_unreachable_grafana_is_one_error_that_says_what_to_do() -> None:
    grafana = Grafana("http://grafana.invalid:3000", "glsa_token")
    grafana.api.client.s.mount("http://", _Recorder(refuse_writes=403))
    with pytest.raises(AccessDenied) as refused:
        grafana.send(Call("POST", "/api/orgs", None, {"name": "city"}))
    assert "refused POST /api/orgs: 403 Permission denied" in str(refused.value)
    assert "needs a Grafana server admin (--user)" in str(refused.value)
    closed = Grafana(f"http://127.0.0.1:{free_port()}", ("admin", "x"), timeout_s=3)
    with pytest.raises(ServerUnavailable) as down:
        closed.send(Call("GET", "/api/orgs/name/city"))
    assert str(down.value).startswith(f"Grafana at {closed.url} is unavailable: GET /api/orgs/name/city")


def test_a_dry_run_reads_the_operators_organisation_in_the_order_the_plan_expects() -> None:
    """`hub grafana sync --dry-run` against a Grafana that holds nothing: the reads leave in `reads()`'s order (the
    order `observe` unpacks the answers in) and no write leaves."""
    s = site()
    grafana = Grafana("http://grafana.invalid:3000", ("admin", "secret"))
    recorder = _Recorder()
    grafana.api.client.s.mount("http://", recorder)
    result = sync(grafana, s, PASSWORDS, dry_run=True)
    assert {r.method for r in recorder.sent} == {"GET"}
    operators = [r.path_url for r in recorder.sent if r.headers.get("X-Grafana-Org-Id") == "1"]
    assert operators == [c.path for c in reads(s, None, 1)]
    assert [(c.method, c.path, c.org, summary(c)) for c in result.done if c.org == 1] == [
        r for r in RECORDED_FIRST_SYNC if r[2] == 1 and r[0] != "GET"
    ]
