"""Every route of the HTTP API is public, or refuses a request without a token (401), and one with another
organisation's token (403, or an answer that holds nothing of the first organisation's).

The app's own route table is the list: a route added without being classified here fails the test. Against
`hub serve`'s app in the test process, reading the session stack's catalog, with a partner and organisations of
the test's own (tests/integration/sharing_support.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import pytest_asyncio
from starlette.routing import Mount, Route

from hub.agreement.access_request import RequestSpec
from hub.api.app import create_app
from hub.catalog import tokens
from hub.control import access_requests
from hub.settings import HubSettings
from tests.integration.page_support import new_token, serving, workspace
from tests.integration.sharing_support import Workspace
from tests.integration.support import run_sync

AGREEMENTS = """\
agreements:
  - {id: open_{tag}, provider: {partner}, consumers: everyone, purpose: t, licence: CC0-1.0,
     grants: [{feed: noise, form: aggregate, bucket: 1h, min_devices: 2}]}
  - {id: reader_{tag}, provider: {partner}, consumers: [reader_{tag}], purpose: t, licence: ODbL-1.0,
     grants: [{feed: air, fields: [pm25]}]}
"""

# Routes anyone may use: the page's catalog, the DCAT-AP catalog, open data, the feeds list, health, signing in.
PUBLIC = {
    ("GET", "/"),
    ("GET", "/catalog.{extension}"),
    ("GET", "/open-data/{provider}/{name}"),
    ("GET", "/feeds"),
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("GET", "/health/live"),
    ("GET", "/metrics"),  # the API's own request counts and times: no partner's data (hub/api/metrics.py)
    ("GET", "/signin"),
    ("POST", "/signin"),
    ("POST", "/signout"),
}
# Routes about one organisation's things: 403 with a token of an organisation they do not belong to.
OWNED = {
    ("GET", "/orgs/{org}/access"),
    ("GET", "/requests/{id:int}"),
    ("POST", "/requests/{id:int}/approve"),
    ("POST", "/requests/{id:int}/refuse"),
    ("GET", "/schemas/ids/{id:int}"),
    ("GET", "/schemas/ids/{id:int}/schema"),
    ("GET", "/schemas/ids/{id:int}/versions"),
    ("GET", "/schemas/ids/{id:int}/subjects"),
    ("POST", "/subjects/{subject}"),
    ("DELETE", "/subjects/{subject}"),
    ("GET", "/subjects/{subject}/versions"),
    ("POST", "/subjects/{subject}/versions"),
    ("GET", "/subjects/{subject}/versions/{version}"),
    ("DELETE", "/subjects/{subject}/versions/{version}"),
    ("GET", "/subjects/{subject}/versions/{version}/schema"),
    ("POST", "/compatibility/subjects/{subject}/versions"),
    ("POST", "/compatibility/subjects/{subject}/versions/{version}"),
    ("GET", "/config/{subject}"),
    ("PUT", "/config/{subject}"),
    ("DELETE", "/config/{subject}"),
    ("GET", "/mode/{subject}"),
    ("PUT", "/mode/{subject}"),
    ("DELETE", "/mode/{subject}"),
}
# Routes of the signed-in organisation itself (its access, its requests, the matrix, the registry's listings and
# settings): any organisation's token, answered with that organisation's things only.
MEMBER = {
    ("GET", "/access"),
    ("GET", "/matrix"),
    ("GET", "/requests"),
    ("POST", "/requests"),
    ("GET", "/requests/new"),
    ("GET", "/subjects"),
    ("GET", "/schemas/types"),
    ("GET", "/config"),
    ("PUT", "/config"),
    ("DELETE", "/config"),
    ("GET", "/mode"),
    ("PUT", "/mode"),
}


@dataclass
class Setting:
    ws: Workspace
    base: str
    reader: str  # a token of reader_<tag>, which an agreement grants the lab's air feed
    lab: str  # a token of the provider
    stranger: str  # a token of an organisation with no agreement at all
    request_id: int
    schema_id: int

    @property
    def subject(self) -> str:
        return f"hub.{self.ws.partner}.air-value"


@pytest_asyncio.fixture(scope="module")
async def setting(stack_settings: HubSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setting]:
    root = tmp_path_factory.mktemp("api-auth")
    ws = await workspace(stack_settings, root, ["reader", "stranger"], AGREEMENTS)
    conn = await asyncpg.connect(stack_settings.endpoints().database_url)
    try:
        spec = RequestSpec(ws.org("reader"), f"{ws.partner}.noise", purpose="noise research")
        request = await access_requests.create(conn, spec, "test-suite")
        schema_id = await conn.fetchval(
            "SELECT schema_id FROM hub.subject_versions WHERE subject = $1", f"hub.{ws.partner}.air-value"
        )
    finally:
        await conn.close()
    tokens_ = [await new_token(stack_settings, o) for o in (ws.org("reader"), ws.partner, ws.org("stranger"))]
    with serving(stack_settings, root / "approved") as base:
        yield Setting(ws, base, *tokens_, request.id, schema_id)


def url_of(path: str, s: Setting) -> str:
    values = {
        "{org}": s.ws.org("reader"),
        "{id:int}": str(s.schema_id if path.startswith("/schemas/") else s.request_id),
        "{subject}": s.subject,
        "{version}": "1",
    }
    for key, value in values.items():
        path = path.replace(key, value)
    return s.base + path + ("?feed=" + s.ws.partner + ".air" if path == "/requests/new" else "")


BODIES = {"/requests": {}, "/approve": {"reason": "fine"}, "/refuse": {"reason": "no"}}


def call(method: str, url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = next((b for suffix, b in BODIES.items() if url.endswith(suffix)), None)
    if body is None and method in ("POST", "PUT"):
        body = {"schema": json.dumps({"type": "record", "name": "x", "fields": []}), "compatibility": "NONE"}
    return httpx.request(method, url, headers=headers, json=body, timeout=30)


def test_every_route_is_classified_public_owned_or_the_members_own() -> None:
    app = create_app("postgresql://nobody@127.0.0.1:1/none")
    found = {(m, r.path) for r in app.routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    assert [r.path for r in app.routes if isinstance(r, Mount)] == ["/static"]  # the stylesheet and script: public
    assert found == PUBLIC | OWNED | MEMBER, f"unclassified: {found - PUBLIC - OWNED - MEMBER}"


@pytest.mark.parametrize(("method", "path"), sorted(OWNED | MEMBER))
def test_a_route_refuses_a_request_without_a_token_and_one_with_a_revoked_token(
    setting: Setting, method: str, path: str, revoked: str
) -> None:
    for token in (None, revoked, "hub_00000000_" + "x" * 43):
        response = call(method, url_of(path, setting), token)
        assert response.status_code == 401, (method, path, token, response.text)
        assert response.json()["error_code"] == 40101


@pytest.mark.parametrize(("method", "path"), sorted(OWNED))
def test_a_route_about_an_organisations_things_refuses_another_organisations_token(
    setting: Setting, method: str, path: str
) -> None:
    response = call(method, url_of(path, setting), setting.stranger)
    assert response.status_code == 403, (method, path, response.text)
    assert response.json()["error_code"] == 40301


@pytest.mark.parametrize(("method", "path"), sorted(MEMBER))
def test_a_members_route_answers_another_organisation_with_its_own_things_only(
    setting: Setting, method: str, path: str
) -> None:
    response = call(method, url_of(path, setting), setting.stranger)
    assert response.status_code not in (401, 403), (method, path, response.text)
    if method == "GET" and path in ("/access", "/requests", "/subjects"):  # nothing of the reader's (the noise is open)
        assert response.status_code == 200
        assert setting.ws.org("reader") not in response.text and f"{setting.ws.partner}.air" not in response.text


def test_the_owner_reads_what_a_stranger_is_refused(setting: Setting) -> None:
    own = call("GET", url_of("/orgs/{org}/access", setting), setting.reader).json()
    assert [e["object"] for e in own["access"] if e["feed"] == f"{setting.ws.partner}.air"] == [
        f"org_{setting.ws.org('reader')}.{setting.ws.partner}__air"
    ]
    schema = call("GET", url_of("/subjects/{subject}/versions/{version}", setting), setting.reader)
    assert schema.status_code == 200 and schema.json()["subject"] == setting.subject
    assert call("GET", url_of("/requests/{id:int}", setting), setting.lab).json()["status"] == "pending"


def test_public_routes_answer_without_a_token(setting: Setting) -> None:
    for path in (
        "/",
        "/catalog.ttl",
        "/feeds",
        "/health",
        "/health/live",
        "/health/ready",
        "/signin",
        "/static/page.css",
    ):
        assert httpx.get(setting.base + path, timeout=30).status_code == 200, path
    scrape = httpx.get(setting.base + "/metrics", timeout=30)
    assert scrape.status_code == 200 and "hub_api_requests_total" in scrape.text
    assert setting.ws.partner not in scrape.text  # routes are counted by name, never by the subject or feed asked for
    opened = httpx.get(f"{setting.base}/open-data/{setting.ws.partner}/noise.json", timeout=30)
    assert opened.status_code == 200 and opened.headers["x-hub-agreement"] == f"open_{setting.ws.tag}"
    closed = httpx.get(f"{setting.base}/open-data/{setting.ws.partner}/air.csv", timeout=30)
    assert closed.status_code == 403 and "not open data" in closed.json()["message"]


def test_registry_clients_authenticate_with_http_basic_as_the_organisation(setting: Setting) -> None:
    url = url_of("/subjects/{subject}/versions", setting)
    reader = setting.ws.org("reader")
    assert httpx.get(url, auth=(reader, setting.reader), timeout=30).json() == [1]
    # the user name must be the token's organisation
    assert httpx.get(url, auth=(setting.ws.partner, setting.reader), timeout=30).status_code == 401
    assert httpx.get(url, auth=(setting.ws.org("stranger"), setting.stranger), timeout=30).status_code == 403


def test_a_page_form_posted_from_another_site_is_refused(setting: Setting) -> None:
    cookies = {"hub_token": setting.lab}
    url = url_of("/requests/{id:int}/refuse", setting)
    elsewhere = httpx.post(url, data={"reason": "x"}, cookies=cookies, headers={"Origin": "http://evil.example"})
    assert elsewhere.status_code == 403 and "own page" in elsewhere.json()["message"]


@pytest.fixture(scope="module")
def revoked(setting: Setting) -> str:
    async def make() -> str:
        conn = await asyncpg.connect(setting.ws.settings.endpoints().database_url)
        try:
            token_id, token = await tokens.create(conn, setting.ws.org("reader"), "revoked", "test-suite")
            await tokens.revoke(conn, token_id, "test-suite")
            return token
        finally:
            await conn.close()

    return run_sync(make())


def hub(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hub", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tokens_and_requests_are_made_listed_revoked_and_decided_from_the_command_line(
    setting: Setting, hub_env: dict[str, str]
) -> None:
    reader = setting.ws.org("reader")
    made = hub(hub_env, "tokens", "create", reader, "--label", "cli")
    token = re.search(r"hub_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", made)
    assert token is not None
    [listed] = [t for t in json.loads(hub(hub_env, "tokens", "list", reader, "--json")) if t["label"] == "cli"]
    assert token.group() not in json.dumps(listed)  # listed by id, never the token
    assert call("GET", f"{setting.base}/access", token.group()).status_code == 200
    hub(hub_env, "tokens", "revoke", listed["id"])
    assert call("GET", f"{setting.base}/access", token.group()).status_code == 401

    asked = hub(hub_env, "requests", "create", "--org", reader, "--feed", f"{setting.ws.partner}.air",
                "--form", "aggregate", "--field", "pm25", "--purpose", "a cli study")  # fmt: skip
    number = re.search(r"request (\d+):", asked)
    assert number is not None and "pending" in asked
    hub(hub_env, "requests", "refuse", number.group(1), "--reason", "not this year", "--by", "alice")
    [row] = [
        r for r in json.loads(hub(hub_env, "requests", "--org", reader, "--json")) if r["id"] == int(number.group(1))
    ]
    assert (row["status"], row["reason"], row["decided_by"]) == ("refused", "not this year", "alice")
    seen = call("GET", f"{setting.base}/requests/{number.group(1)}", setting.reader).json()
    assert seen["status"] == "refused" and seen["reason"] == "not this year"
