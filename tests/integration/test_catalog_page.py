"""The catalog a harvester reads and the page people use, against `hub serve`'s app on the session stack.

- `/catalog.ttl` validates against the official DCAT-AP 3.0.1 shapes (from ../shared/dcat-ap, never copied
  here) with zero violations, page after page as CKAN's harvester walks it (hydra:next);
- a real headless Chromium (Debian's, driven by Playwright) opens the page, searches, signs in as an
  organisation, asks for a feed; its provider signs in and approves; then `hub explain` shows the grant and the
  organisation's own database role reads the rows.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect
from rdflib import Graph, Namespace, URIRef
from rdflib import namespace as ns

from hub.settings import HubSettings
from hub.stack.local import cli_env
from tests.integration.page_support import new_token, serving, workspace
from tests.integration.sharing_support import Workspace

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO.parent / "shared" / "dcat-ap"
SHAPE_FILES = ("dcat-ap-3.0.1-shapes.ttl", "dcat-ap-3.0.1-range.ttl", "dcat-ap-3.0.1-shapes_recommended.ttl")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
SH = Namespace("http://www.w3.org/ns/shacl#")
PAGE_SIZE = 2

AGREEMENTS = """\
agreements:
  - {id: open_{tag}, provider: {partner}, consumers: everyone, purpose: Open noise data, licence: CC0-1.0,
     grants: [{feed: noise, form: aggregate, bucket: 1h, min_devices: 2}]}
  - {id: streams_{tag}, provider: {partner}, consumers: [other_{tag}], purpose: Live air, licence: ODbL-1.0,
     valid_until: 2031-01-01, delivery: [sql, kafka, mqtt], grants: [{feed: air, fields: [pm25, no2]}]}
"""


@dataclass
class Site:
    ws: Workspace
    base: str
    approved: Path  # where approvals write agreement files


@pytest_asyncio.fixture(scope="module")
async def site(applied: HubSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """The example partners (their themes, keywords, licences) and the tests' own partner, served."""
    stack_settings = applied
    root = tmp_path_factory.mktemp("page")
    ws = await workspace(stack_settings, root, ["reader", "other"], AGREEMENTS)
    with serving(stack_settings, root / "approved", page_size=PAGE_SIZE) as base:
        yield Site(ws, base, root / "approved")


def shapes() -> Graph:
    if not all((SHAPES / name).is_file() for name in SHAPE_FILES):
        pytest.skip(f"no DCAT-AP 3 shapes: {SHAPES} is absent (they are kept in ../shared/dcat-ap, not here)")
    graph = Graph()
    for name in SHAPE_FILES:  # one shapes graph: the range shapes apply only so (`pyshacl -e` ignores them)
        graph.parse(SHAPES / name, format="turtle")
    return graph


def severities(report: Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for result in report.subjects(ns.RDF.type, SH.ValidationResult):
        severity = str(report.value(result, SH.resultSeverity)).rsplit("#", 1)[-1]
        out[severity] = out.get(severity, 0) + 1
    return out


def next_page(g: Graph) -> str | None:
    """What ckanext-dcat's RDF harvester follows: hydra:next, else hydra:nextPage, of the PagedCollection."""
    for node in g.subjects(ns.RDF.type, HYDRA.PagedCollection):
        for predicate in (HYDRA.next, HYDRA.nextPage):
            for o in g.objects(node, predicate):
                return str(o)
    return None


def test_the_catalog_validates_against_dcat_ap_3_with_zero_violations_on_every_page_a_harvester_walks(
    site: Site,
) -> None:
    import pyshacl

    shape_graph = shapes()
    url: str | None = f"{site.base}/catalog.ttl"
    datasets: list[str] = []
    pages = 0
    secret = site.ws.settings.secrets()["postgres_password"]
    while url is not None:
        text = httpx.get(url, timeout=60).text
        assert secret not in text and "password" not in text.lower()  # no credential anywhere
        g = Graph().parse(data=text, format="turtle")
        pages += 1
        if pages <= 2:  # pyshacl takes a while: the first two pages (every page is a whole catalog)
            conforms, report, _text = pyshacl.validate(
                g, shacl_graph=shape_graph, inference="none", allow_warnings=True
            )
            counts = severities(report)
            assert conforms and counts.get("Violation", 0) == 0, _text[:3000]
            print(f"\nDCAT-AP 3 page {pages}: {len(g)} triples, {counts.get('Warning', 0)} warnings, 0 violations")
        datasets += [str(d) for d in g.subjects(ns.RDF.type, ns.DCAT.Dataset)]
        url = next_page(g)
        assert pages < 100
    feeds = httpx.get(f"{site.base}/feeds", timeout=30).json()
    assert pages == -(-len(feeds) // PAGE_SIZE) >= 2
    assert sorted(d.rsplit("/", 1)[1] for d in datasets) == sorted(f"{f['partner']}.{f['feed']}" for f in feeds)


def test_page_two_parses_in_every_format_with_the_same_triples(site: Site) -> None:
    graphs = {}
    for extension, fmt in (("ttl", "turtle"), ("jsonld", "json-ld"), ("rdf", "xml")):
        response = httpx.get(f"{site.base}/catalog.{extension}?page=2", timeout=60)
        assert response.status_code == 200
        graphs[extension] = Graph().parse(data=response.content, format=fmt)
    assert len(graphs["ttl"]) == len(graphs["jsonld"]) == len(graphs["rdf"])
    assert len(list(graphs["ttl"].subjects(ns.RDF.type, ns.DCAT.Dataset))) == PAGE_SIZE


def test_a_feed_is_open_or_restricted_as_its_agreements_say_with_its_streams_and_coverage(site: Site) -> None:
    partner = site.ws.partner
    found = {}
    url: str | None = f"{site.base}/catalog.ttl"
    while url is not None:
        g = Graph().parse(data=httpx.get(url, timeout=60).text, format="turtle")
        for feed in ("air", "noise"):
            d = URIRef(f"{site.base}/catalog/feeds/{partner}.{feed}")
            if (d, ns.RDF.type, ns.DCAT.Dataset) in g:
                rights = str(g.value(d, URIRef("http://purl.org/dc/terms/accessRights")))
                distributions = sorted(str(x).rsplit("/", 1)[1] for x in g.objects(d, ns.DCAT.distribution))
                found[feed] = (
                    rights.rsplit("/", 1)[1],
                    distributions,
                    g.value(d, URIRef("http://purl.org/dc/terms/temporal")),
                )
        url = next_page(g)
    assert found["noise"][:2] == ("PUBLIC", ["open-data-csv", "sql"])
    assert found["air"][:2] == ("RESTRICTED", ["kafka", "mqtt", "sql"])  # streams_{tag} asks for both
    assert found["air"][2] is not None  # the rows' time coverage
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    g = Graph().parse(data=httpx.get(f"{site.base}/catalog.ttl", params={"modified_since": later}, timeout=60).text)
    assert list(g.subjects(ns.RDF.type, ns.DCAT.Dataset)) == []


async def test_an_organisation_finds_a_feed_asks_for_it_and_reads_it_once_the_provider_approves(
    site: Site, page: Page
) -> None:
    ws = site.ws
    reader, feed = ws.org("reader"), f"{ws.partner}.air"
    reader_token, lab_token = await new_token(ws.settings, reader), await new_token(ws.settings, ws.partner)
    print(f"\nbrowser: {page.context.browser.version if page.context.browser else '?'}")

    await page.goto(site.base + "/")
    await page.get_by_label("Search").fill(ws.partner)  # the session stack holds other tests' feeds too
    await expect(page.locator("#count")).to_have_text(re.compile(r"^2 of \d+ feeds shown$"))
    await page.get_by_label("Access").select_option("open")
    await expect(page.locator(f"#feed-{ws.partner}-noise")).to_be_visible()
    await expect(page.locator(f"#feed-{ws.partner}-air")).to_be_hidden()
    await page.get_by_label("Access").select_option("")

    # sign in as the reader (the keyboard is enough: the token field, then Enter)
    await page.get_by_role("link", name="Sign in", exact=True).click()
    await page.get_by_label("API token").fill(reader_token)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_have_text(f"Signed in as {reader}")
    await expect(page.locator("#reads-count")).to_contain_text("grant")
    await page.goto(f"{site.base}/?q={ws.partner}")
    await page.locator(f"#feed-{ws.partner}-air").get_by_role("link", name=f"Request access to {feed}").click()
    await page.get_by_label("battery_v").uncheck()
    await page.get_by_label("Purpose (what the data is for)").fill("Air quality near schools")
    await page.get_by_role("button", name="Request access").click()
    made = page.locator("article.request", has_text=f"{ws.partner}'s air")
    await expect(made.locator(".status")).to_have_text("pending")

    # the provider signs in and approves
    await page.get_by_role("button", name="Sign out").click()
    await page.goto(site.base + "/signin")
    await page.get_by_label("API token").fill(lab_token)
    await page.get_by_role("button", name="Sign in").click()
    await page.goto(site.base + "/requests")
    received = page.locator("article.request", has_text=f"{reader} asks for air")
    await received.get_by_role("button", name="Approve").click()
    await expect(received.locator(".status")).to_contain_text("approved on")
    await page.get_by_role("link", name="Sharing matrix").click()
    await expect(page.locator("#matrix")).to_contain_text(reader)

    # the reader's page, `hub explain` and the database agree
    await page.get_by_role("button", name="Sign out").click()
    await page.goto(site.base + "/signin")
    await page.get_by_label("API token").fill(reader_token)
    await page.get_by_role("button", name="Sign in").click()
    view = f"org_{reader}.{ws.partner}__air"
    await expect(page.locator("code.object", has_text=view)).to_be_visible()
    await expect(page.locator("pre.command").first).to_contain_text(f"psql postgresql://org_{reader}@")

    explained = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hub", "explain", reader, feed, "--json"],
        env=cli_env(ws.settings), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    decision = json.loads(explained.stdout)
    [grant] = decision["grants"]
    assert decision["allowed"] and decision["object"] == view and grant["agreement"].startswith("request_")
    assert grant["fields"] == ["pm25", "pm10", "no2", "temperature_c", "humidity_pct"]  # battery_v unchecked
    assert grant["file"] == str(site.approved / f"{grant['agreement']}.yaml")
    conn = await ws.connect("reader")
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {view}") > 0
    finally:
        await conn.close()
    hub_conn = await asyncpg.connect(ws.settings.endpoints().database_url)
    try:
        actor = await hub_conn.fetchval(
            "SELECT actor FROM hub.agreement_events WHERE agreement_id = $1 AND action = 'created'", grant["agreement"]
        )
    finally:
        await hub_conn.close()
    assert actor.startswith(f"{ws.partner} (API token ")  # who approved, in the audit trail
