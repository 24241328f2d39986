"""`hub grafana sync`: the planned calls (hub/grafana/sync_plan.py) sent with grafana-client.

Authentication: a Grafana server admin's login (basic auth) reaches every organisation and can create them; a
service-account token belongs to one organisation, so with a token only that organisation is synced (Grafana's
own first organisation, the operators', or the one whose name is a hub organisation's id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from hub.errors import AccessDenied, HubError, ServerUnavailable
from hub.grafana import sync_plan
from hub.grafana.model import Site
from hub.grafana.sync_plan import Call, Observed

OPERATORS_ORG_ID = 1


class Grafana:
    """One Grafana, spoken to one documented call at a time."""

    def __init__(self, url: str, credential: str | tuple[str, str], timeout_s: float = 30.0) -> None:
        self.url = url
        self.login = credential[0] if isinstance(credential, tuple) else None
        self.api = GrafanaApi.from_url(url, credential=credential, timeout=timeout_s)

    def send(self, call: Call) -> Any:
        """Grafana's answer; None when a read finds nothing (404)."""
        headers = {"X-Grafana-Org-Id": str(call.org)} if call.org is not None else None
        run = getattr(self.api.client, call.method)
        body = dict(call.body) if call.body is not None else None
        where = f"{call.method} {call.path}" + (f" (organisation {call.org})" if call.org is not None else "")
        try:
            # grafana-client's base URL ends in /api already; our calls name the documented paths in full
            return run(call.path.removeprefix("/api"), json=body, headers=headers)
        except GrafanaClientError as exc:
            if exc.status_code == 404 and call.method == "GET":
                return None
            if exc.status_code in (401, 403):
                raise AccessDenied(
                    f"Grafana at {self.url} refused {where}: {exc.status_code} {_message(exc)}; creating organisations "
                    "and reaching more than one needs a Grafana server admin (--user), a token reaches its own only"
                ) from None
            raise HubError(f"Grafana at {self.url} refused {where}: {exc.status_code} {_message(exc)}") from None
        except GrafanaException as exc:
            raise ServerUnavailable("Grafana", self.url, f"{where}: {exc}") from None
        except OSError as exc:
            raise ServerUnavailable("Grafana", self.url, f"{where}: {exc}") from None


def _message(exc: GrafanaException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "message" in response:
        return str(response["message"])
    return str(exc)


@dataclass
class SyncResult:
    org_ids: dict[str | None, int] = field(default_factory=dict)  # hub organisation (None: operators) -> Grafana id
    done: list[Call] = field(default_factory=list)  # the writes sent (or, in a dry run, that would be)
    notes: list[str] = field(default_factory=list)


def observe(grafana: Grafana, site: Site, hub_org: str | None, org_id: int | None) -> Observed:
    """What one organisation holds now (an organisation not created yet, in a dry run, holds nothing)."""
    if org_id is None:
        return Observed()
    ds_call, *calls = sync_plan.reads(site, hub_org, org_id)
    datasource = grafana.send(ds_call)
    prometheus = grafana.send(calls.pop(0)) if sync_plan.prometheus_of(site, hub_org) else None
    folders_call, search_call, *dashboard_calls = calls
    folders = grafana.send(folders_call) or []
    hits = grafana.send(search_call) or []
    seen = Observed(
        datasource=datasource,
        prometheus=prometheus,
        folders={f["uid"]: f["title"] for f in folders},
        managed=[h["uid"] for h in hits if h.get("type") == "dash-db"],
    )
    answers = {call.path.rsplit("/", 1)[1]: grafana.send(call) for call in dashboard_calls}
    seen.dashboards = {uid: answer for uid, answer in answers.items() if answer is not None}
    return seen


def _targets(
    grafana: Grafana, site: Site, token: bool, dry_run: bool, result: SyncResult
) -> dict[str | None, int | None]:
    if token:
        me = grafana.send(Call("GET", "/api/org")) or {}
        if me.get("id") == OPERATORS_ORG_ID:
            result.notes.append("a service-account token reaches its own organisation only: synced the operators'")
            return {None: OPERATORS_ORG_ID}
        for o in site.orgs:
            if o.hub_org is not None and o.name == me.get("name"):
                result.notes.append(f"a service-account token reaches its own organisation only: synced {o.hub_org}")
                return {o.hub_org: int(me["id"])}
        raise HubError(
            f"the token belongs to Grafana organisation {me.get('name')!r}, which is no hub organisation; "
            "use a server admin's login (--user) to sync every organisation"
        )
    hub_orgs = [o for o in site.orgs if o.hub_org is not None]
    found: dict[str, int | None] = {}
    for o, call in zip(hub_orgs, sync_plan.find_orgs(site), strict=True):
        answer = grafana.send(call)
        found[o.name] = int(answer["id"]) if answer else None
    for org_id in [i for i in found.values() if i is not None]:
        for call in sync_plan.join(org_id, grafana.login or "", grafana.send(sync_plan.members(org_id)) or []):
            result.done.append(call)
            if not dry_run:
                grafana.send(call)
    for call in sync_plan.create_orgs(site, found):
        result.done.append(call)
        if not dry_run:
            answer = grafana.send(call) or {}
            found[str(call.body["name"]) if call.body else ""] = int(answer["orgId"])
    targets: dict[str | None, int | None] = {None: OPERATORS_ORG_ID}
    targets.update({o.hub_org: found.get(o.name) for o in hub_orgs})
    return targets


def sync(
    grafana: Grafana,
    site: Site,
    passwords: dict[str, str],
    rotated: frozenset[str] = frozenset(),
    *,
    token: bool = False,
    dry_run: bool = False,
) -> SyncResult:
    """Make Grafana hold the site: organisations first, then each one's datasource, folders and dashboards."""
    result = SyncResult()
    for hub_org, org_id in _targets(grafana, site, token, dry_run, result).items():
        if org_id is not None:
            result.org_ids[hub_org] = org_id
        seen = observe(grafana, site, hub_org, org_id)
        plan = sync_plan.writes(site, hub_org, org_id or 0, seen, passwords, rotated)
        result.notes += plan.notes
        for call in plan.calls:
            result.done.append(call)
            if not dry_run:
                grafana.send(call)
    return result
