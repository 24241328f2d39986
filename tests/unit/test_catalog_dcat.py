"""The DCAT-AP 3 catalog, pure: what each feed becomes, paging as CKAN's harvester walks it, no credential.

Validated against the official shapes where ../shared/dcat-ap holds them (tests/integration/test_catalog_page.py
validates the served catalog of real feeds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib import namespace as ns

from hub.access.published import FieldInfo, PublishedFeed, Publisher
from hub.access.reading import mosquitto_sub_line, psql_line, public_addresses
from hub.api import dcat
from hub.api.dcat_vocab import licence_types

SHAPES = Path(__file__).resolve().parents[3] / "shared" / "dcat-ap"
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
T0 = datetime(2026, 11, 1, tzinfo=UTC)
BASE = "https://hub.example/"
ADDRESSES = public_addresses(
    "postgresql://postgres:s3cret-db@db.example:5432/hub", "mqtts://admin:s3cret-mq@mq.example:8883",
    "kafka.example:9092", "https://hub.example",
)  # fmt: skip
INFO = dcat.CatalogInfo(BASE, "Hub", "Feeds.", "City of Riverton", "LocalAuthority", "CC0-1.0", "data@riverton.example")


def feed(i: int, *, bbox: bool = False, open_: bool = False) -> PublishedFeed:
    fields = (FieldInfo("pm25", "double precision", True),)
    if bbox:
        fields += (FieldInfo("lat", "double precision", True), FieldInfo("lon", "double precision", True))
    return PublishedFeed(
        key=f"lab.f{i}", name=f"f{i}", publisher=Publisher("lab", "Air Lab", "university", "air@lab.example"),
        description="Air.", licence="CC-BY-SA-4.0", themes=("ENVI",), keywords=("air",), fields=fields,
        payload_format="json", subject=f"hub.lab.f{i}-value", schema_version=1, issued=T0,
        modified=T0 + timedelta(days=i), open_objects=("open_data.lab__f0",) if open_ else (), open_forms=("raw",),
        kafka_streams=True, mqtt_streams=True, first=T0, last=T0 + timedelta(days=1),
        bbox=(4.3, 50.8, 4.4, 50.9) if bbox else None,
    )  # fmt: skip


FEEDS = [feed(0, bbox=True, open_=True), feed(1), feed(2)]


def page(number: int, size: int = 2, since: datetime | None = None) -> Graph:
    chosen, total = dcat.select(FEEDS, number, size, since)
    return dcat.build(INFO, ADDRESSES, chosen, FEEDS, dcat.Page(number, size, total, "ttl", since))


def test_every_page_conforms_to_dcat_ap_3_with_zero_violations() -> None:
    import pyshacl

    names = ("dcat-ap-3.0.1-shapes.ttl", "dcat-ap-3.0.1-range.ttl", "dcat-ap-3.0.1-shapes_recommended.ttl")
    if not all((SHAPES / n).is_file() for n in names):
        pytest.skip(f"no DCAT-AP 3 shapes: {SHAPES} is absent")
    shapes = Graph()
    for n in names:
        shapes.parse(SHAPES / n, format="turtle")
    for number in (1, 2):
        conforms, report, text = pyshacl.validate(
            page(number), shacl_graph=shapes, inference="none", allow_warnings=True
        )
        sh = Namespace("http://www.w3.org/ns/shacl#")
        violations = [r for r in report.subjects(sh.resultSeverity, sh.Violation)]
        assert conforms and not violations, text[:3000]


def test_a_schema_with_coordinates_gives_the_feed_an_area_and_open_data_a_csv_download() -> None:
    g = page(1)
    d = URIRef(f"{BASE}catalog/feeds/lab.f0")
    area = g.value(d, ns.DCTERMS.spatial)
    assert str(g.value(area, ns.DCAT.bbox)) == "POLYGON((4.3 50.8,4.4 50.8,4.4 50.9,4.3 50.9,4.3 50.8))"
    assert g.value(d, ns.DCTERMS.accessRights) == URIRef(
        "http://publications.europa.eu/resource/authority/access-right/PUBLIC"
    )
    download = g.value(URIRef(f"{d}/distributions/open-data-csv"), ns.DCAT.downloadURL)
    assert download == URIRef(f"{BASE}open-data/lab/f0.csv")
    assert g.value(URIRef(f"{BASE}catalog/feeds/lab.f1"), ns.DCTERMS.spatial) is None


def test_pages_link_as_ckan_reads_them_carrying_the_filter_to_the_last_page() -> None:
    first, last = page(1), page(2)
    [node] = first.subjects(ns.RDF.type, HYDRA.PagedCollection)
    assert first.value(node, HYDRA.next) == Literal(f"{BASE}catalog.ttl?page=2")
    assert first.value(node, HYDRA.nextPage) == first.value(node, HYDRA.next)
    assert first.value(node, HYDRA.totalItems) == Literal(3)
    [node] = last.subjects(ns.RDF.type, HYDRA.PagedCollection)
    assert last.value(node, HYDRA.next) is None and last.value(node, HYDRA.previous) is not None
    since = page(1, since=T0 + timedelta(days=1))
    assert len(list(since.subjects(ns.RDF.type, ns.DCAT.Dataset))) == 2  # f1 and f2 changed since
    [node] = since.subjects(ns.RDF.type, HYDRA.PagedCollection)
    assert str(since.value(node, HYDRA.last)) == f"{BASE}catalog.ttl?modified_since=2026-11-02T00%3A00%3A00Z&page=1"


def test_no_credential_of_any_server_reaches_the_catalog_or_the_start_lines() -> None:
    text = dcat.serialise(page(1), "ttl").decode() + dcat.serialise(page(1), "jsonld").decode()
    lines = psql_line(ADDRESSES, "city", "org_city.lab__f0", False) + mosquitto_sub_line(
        ADDRESSES, "city", "share/city/lab/f0/+"
    )
    for secret in ("s3cret", "postgres@", "admin@"):
        assert secret not in text and secret not in lines
    assert "postgresql://db.example:5432/hub" in text and "mqtts://mq.example:8883" in text
    assert lines.startswith("psql postgresql://org_city@db.example:5432/hub -c ")
    assert '-P "$HUB_MQTT_PASSWORD"' in lines and '--cafile "$HUB_MQTT_CA"' in lines


@pytest.mark.parametrize(
    ("name", "types"),
    [
        ("CC0-1.0", ["PublicDomain"]),
        ("CC-BY-4.0", ["Attribution"]),
        ("CC-BY-SA-4.0", ["Attribution", "ShareAlike"]),
        ("CC-BY-NC-4.0", ["Attribution", "NonCommercialUse"]),
        ("ODbL-1.0", ["Attribution", "ShareAlike"]),
        ("Our own terms", []),
    ],
)
def test_a_licence_gets_its_adms_types(name: str, types: list[str]) -> None:
    assert licence_types(name) == types
