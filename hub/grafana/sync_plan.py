"""The HTTP requests `hub grafana sync` sends, decided from what Grafana answered: pure.

Each request is one documented call of Grafana's HTTP API (https://grafana.com/docs/grafana/latest/developers/
http_api/): organisations `GET /api/orgs/name/:name`, `POST /api/orgs`; data sources `GET|PUT
/api/datasources/uid/:uid`, `POST /api/datasources`; folders `GET|POST /api/folders`, `PUT /api/folders/:uid`;
dashboards `GET /api/search`, `GET|DELETE /api/dashboards/uid/:uid`, `POST /api/dashboards/db`; members of an
organisation the syncing admin did not create `GET|POST /api/orgs/:orgId/users`. A request for
an organisation's content carries `X-Grafana-Org-Id`. Organisations come first, so nothing refers to one that
does not exist; then, per organisation, its datasource (the operators' organisation also its Prometheus
datasource), folders, dashboards, and the deletion of generated dashboards it may no longer see. A second run
against the same Grafana sends reads only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hub.grafana.model import MANAGED_TAG, Dashboard, Datasource, PrometheusSource, Site

SYNC_MESSAGE = "hub grafana sync"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    org: int | None = None  # X-Grafana-Org-Id
    body: Mapping[str, Any] | None = None
    why: str = ""

    def redacted(self) -> Call:
        """The same call with any password replaced, for output and recordings."""
        if not self.body or "secureJsonData" not in self.body:
            return self
        return Call(
            self.method, self.path, self.org, {**self.body, "secureJsonData": {"password": "<redacted>"}}, self.why
        )


@dataclass
class Observed:
    """What one Grafana organisation holds, from the answers to `reads()`."""

    datasource: Mapping[str, Any] | None = None  # None: Grafana answered 404
    prometheus: Mapping[str, Any] | None = None  # the operators' Prometheus datasource; None: 404
    folders: Mapping[str, str] = field(default_factory=dict)  # uid -> title
    managed: list[str] = field(default_factory=list)  # uids of dashboards tagged hub-generated
    dashboards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "meta"}


@dataclass
class Plan:
    calls: list[Call] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_orgs(site: Site) -> list[Call]:
    return [Call("GET", f"/api/orgs/name/{quote(o.name, safe='')}") for o in site.orgs if o.hub_org is not None]


def create_orgs(site: Site, found: Mapping[str, int | None]) -> list[Call]:
    """`found`: Grafana's organisation id by name, None where it answered 404."""
    return [
        Call("POST", "/api/orgs", None, {"name": o.name}, f"create organisation {o.name}")
        for o in site.orgs
        if o.hub_org is not None and found.get(o.name) is None
    ]


def members(org_id: int) -> Call:
    return Call("GET", f"/api/orgs/{org_id}/users")


def join(org_id: int, login: str, users: list[Mapping[str, Any]]) -> list[Call]:
    """A server admin reaches an organisation's content only as its member (Grafana adds the one who creates an
    organisation; one made by someone else needs this)."""
    if any(u.get("login") == login for u in users):
        return []
    body = {"loginOrEmail": login, "role": "Admin"}
    return [Call("POST", f"/api/orgs/{org_id}/users", None, body, f"add {login} to organisation {org_id} as Admin")]


def prometheus_of(site: Site, hub_org: str | None) -> PrometheusSource | None:
    return site.prometheus if hub_org is None else None


def reads(site: Site, hub_org: str | None, org_id: int) -> list[Call]:
    """What the plan of one organisation needs to know; the answers make `Observed` (in this order: datasource,
    the operators' Prometheus datasource if the site has one, folders, search, each dashboard)."""
    ds = site.datasource(hub_org)
    prometheus = prometheus_of(site, hub_org)
    calls = [
        Call("GET", f"/api/datasources/uid/{ds.uid}", org_id),
        *([Call("GET", f"/api/datasources/uid/{prometheus.uid}", org_id)] if prometheus else []),
        Call("GET", "/api/folders", org_id),
        Call("GET", f"/api/search?type=dash-db&tag={MANAGED_TAG}&limit=5000", org_id),
    ]
    return calls + [Call("GET", f"/api/dashboards/uid/{d.uid}", org_id) for d in site.dashboards_of(hub_org)]


def _datasource(
    ds: Datasource, org_id: int, seen: Mapping[str, Any] | None, password: str | None, rotated: bool
) -> Plan:
    plan = Plan()
    wanted = ds.settings()
    if seen is not None and seen.get("readOnly"):
        plan.notes.append(f"datasource {ds.uid} is provisioned from files in this Grafana: left as it is")
        return plan
    if seen is None or rotated or not (seen.get("secureJsonFields") or {}).get("password"):
        if password is None:
            plan.notes.append(f"datasource {ds.uid}: no password for {ds.user} (set {ds.password_env}); not written")
            return plan
        wanted = {**wanted, "secureJsonData": {"password": password}}
    if seen is None:
        plan.calls.append(Call("POST", "/api/datasources", org_id, wanted, f"create datasource {ds.uid} as {ds.user}"))
    elif (
        "secureJsonData" in wanted
        or any(seen.get(k) != v for k, v in ds.settings().items() if k != "jsonData")
        or any((seen.get("jsonData") or {}).get(k) != v for k, v in ds.settings()["jsonData"].items())
    ):
        plan.calls.append(
            Call("PUT", f"/api/datasources/uid/{ds.uid}", org_id, wanted, f"update datasource {ds.uid} as {ds.user}")
        )
    return plan


def _prometheus(ds: PrometheusSource, org_id: int, seen: Mapping[str, Any] | None) -> Plan:
    plan = Plan()
    wanted = ds.settings()
    if seen is not None and seen.get("readOnly"):
        plan.notes.append(f"datasource {ds.uid} is provisioned from files in this Grafana: left as it is")
    elif seen is None:
        plan.calls.append(Call("POST", "/api/datasources", org_id, wanted, f"create datasource {ds.uid} at {ds.url}"))
    elif any(seen.get(k) != v for k, v in wanted.items() if k != "jsonData") or any(
        (seen.get("jsonData") or {}).get(k) != v for k, v in wanted["jsonData"].items()
    ):
        plan.calls.append(
            Call("PUT", f"/api/datasources/uid/{ds.uid}", org_id, wanted, f"update datasource {ds.uid} at {ds.url}")
        )
    return plan


def _same(seen: Mapping[str, Any], d: Dashboard) -> bool:
    model = {k: v for k, v in (seen.get("dashboard") or {}).items() if k not in ("id", "version")}
    return model == d.model and (seen.get("meta") or {}).get("folderUid") == d.folder


def writes(
    site: Site,
    hub_org: str | None,
    org_id: int,
    seen: Observed,
    passwords: Mapping[str, str],
    rotated: frozenset[str] = frozenset(),
) -> Plan:
    """The writes that make one Grafana organisation hold what the site says, and nothing generated besides.

    `passwords` by environment variable name; `rotated`: roles whose password changed in this run."""
    ds = site.datasource(hub_org)
    plan = _datasource(ds, org_id, seen.datasource, passwords.get(ds.password_env), ds.user in rotated)
    prometheus = prometheus_of(site, hub_org)
    if prometheus is not None:
        extra = _prometheus(prometheus, org_id, seen.prometheus)
        plan.calls += extra.calls
        plan.notes += extra.notes
    for folder in site.folders_of(hub_org):
        title = seen.folders.get(folder.uid)
        if title is None:
            plan.calls.append(
                Call(
                    "POST",
                    "/api/folders",
                    org_id,
                    {"uid": folder.uid, "title": folder.title},
                    f"create folder {folder.title}",
                )
            )
        elif title != folder.title:
            body = {"title": folder.title, "overwrite": True}
            plan.calls.append(Call("PUT", f"/api/folders/{folder.uid}", org_id, body, f"rename folder {folder.uid}"))
    wanted = site.dashboards_of(hub_org)
    for d in wanted:
        current = seen.dashboards.get(d.uid)
        if current is not None and (current.get("meta") or {}).get("provisioned"):
            plan.notes.append(f"dashboard {d.uid} is provisioned from files in this Grafana: left as it is")
            continue
        if current is not None and _same(current, d):
            continue
        body = {"dashboard": d.model, "folderUid": d.folder, "overwrite": True, "message": SYNC_MESSAGE}
        verb = "create" if current is None else "update"
        plan.calls.append(Call("POST", "/api/dashboards/db", org_id, body, f"{verb} dashboard {d.title!r}"))
    keep = {d.uid for d in wanted}
    for stale in sorted(set(seen.managed) - keep):
        plan.calls.append(
            Call("DELETE", f"/api/dashboards/uid/{stale}", org_id, None, f"delete dashboard {stale}: no longer granted")
        )
    return plan
