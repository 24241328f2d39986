"""The hub's catalog as DCAT-AP 3 (`/catalog.ttl`, `/catalog.jsonld`, `/catalog.rdf`), built with rdflib. Pure.

Every feed is a `dcat:Dataset` with its publisher, keywords, themes, access rights (PUBLIC when open data is in
force for it, RESTRICTED where an agreement is needed), temporal and (with coordinates) spatial coverage, and
its distributions: rows in SQL, live share streams on Kafka and MQTT where an agreement delivers them, and the
open data as CSV where there is any. `dcat:DataService` entries describe the SQL server, the Kafka and MQTT
share topics and the schema registry by address only: no credential is ever in the graph.

Paging follows ckanext-dcat, so its harvester can walk it: `?page=N` (and `modified_since`), each page a whole
catalog (agents, services and vocabulary repeated) with a `hydra:PagedCollection` whose `next`/`nextPage` carry
the same filter. A CKAN harvest source must be the full catalog without `modified_since`: CKAN deletes every
dataset a harvest did not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCAT, FOAF, RDF, XSD
from rdflib.namespace import DCTERMS as DCT

from hub.access.published import PublishedFeed, Publisher
from hub.access.reading import Addresses
from hub.agreement import names
from hub.api import dcat_vocab as v

FORMATS = {
    "ttl": ("turtle", "text/turtle"),
    "jsonld": ("json-ld", "application/ld+json"),
    "rdf": ("xml", "application/rdf+xml"),
}
JSONLD_CONTEXT = {
    "dcat": str(DCAT),
    "dct": str(DCT),
    "foaf": str(FOAF),
    "vcard": str(v.VCARD),
    "dcatap": str(v.DCATAP),
    "hydra": str(v.HYDRA),
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "xsd": str(XSD),
}


@dataclass(frozen=True)
class CatalogInfo:
    """What the catalog says about itself (settings `HUB_CATALOG_*`)."""

    base: str  # the hub's public address, ending in '/'
    title: str
    description: str
    publisher: str
    publisher_type: str  # an ADMS publisher type code, e.g. LocalAuthority
    licence: str  # of the catalog's metadata
    contact: str | None = None


@dataclass(frozen=True)
class Page:
    number: int
    size: int
    total: int  # datasets matching the filter, over every page
    extension: str  # ttl | jsonld | rdf
    modified_since: datetime | None = None

    @property
    def last(self) -> int:
        return max(1, -(-self.total // self.size))

    def url(self, base: str, number: int) -> str:
        query: dict[str, str] = {}
        if self.modified_since is not None:
            query["modified_since"] = _iso(self.modified_since)
        query["page"] = str(number)
        return f"{base}catalog.{self.extension}?{urlencode(query)}"


def select(
    feeds: Sequence[PublishedFeed], page: int, size: int, modified_since: datetime | None
) -> tuple[list[PublishedFeed], int]:
    """The feeds of one page (sorted by provider.feed), and how many match over every page."""
    chosen = [f for f in feeds if modified_since is None or f.modified >= modified_since]
    return chosen[(page - 1) * size : page * size], len(chosen)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _when(t: datetime) -> Literal:
    return Literal(t.isoformat(), datatype=XSD.dateTime)


def _en(text: str) -> Literal:
    return Literal(text, lang="en")


def title_of(f: PublishedFeed) -> str:
    return f"{f.name.replace('_', ' ').capitalize()} ({f.publisher.name})"


def dataset_iri(base: str, f: PublishedFeed) -> URIRef:
    return URIRef(f"{base}catalog/feeds/{quote(f.key)}")


def anchor(f: PublishedFeed) -> str:
    """The feed's place on the web page."""
    return f"feed-{f.publisher.id}-{f.name}"


class _Builder:
    def __init__(self, info: CatalogInfo, addresses: Addresses) -> None:
        self.info = info
        self.base = info.base
        self.addresses = addresses
        self.g = Graph()
        for prefix, ns in (("vcard", v.VCARD), ("dcatap", v.DCATAP), ("hydra", v.HYDRA), ("gsp", v.GSP)):
            self.g.bind(prefix, ns)
        self.operator = URIRef(f"{self.base}catalog/operator")
        self.services: dict[str, URIRef] = {}

    def agent(self, iri: URIRef, name: str, type_code: str) -> URIRef:
        g = self.g
        g.add((iri, RDF.type, FOAF.Agent))
        g.add((iri, FOAF.name, _en(name)))
        g.add((iri, DCT.type, v.publisher_type(g, type_code)))
        return iri

    def publisher(self, p: Publisher) -> URIRef:
        return self.agent(URIRef(f"{self.base}catalog/organisations/{p.id}"), p.name, v.KIND_TO_PUBLISHER_TYPE[p.kind])

    def contact(self, iri: URIRef, name: str, address: str) -> URIRef:
        g = self.g
        g.add((iri, RDF.type, v.VCARD.Kind))
        g.add((iri, v.VCARD.fn, Literal(name)))
        if "@" in address:
            g.add((iri, v.VCARD.hasEmail, URIRef(f"mailto:{quote(address, safe='@.+-_')}")))
        return iri

    def catalog(self, feeds: Sequence[PublishedFeed], all_feeds: Sequence[PublishedFeed]) -> URIRef:
        g, info = self.g, self.info
        cat = URIRef(f"{self.base}catalog")
        g.add((cat, RDF.type, DCAT.Catalog))
        g.add((cat, DCT.title, _en(info.title)))
        g.add((cat, DCT.description, _en(info.description)))
        g.add((cat, DCT.publisher, self.agent(self.operator, info.publisher, info.publisher_type)))
        g.add((cat, FOAF.homepage, v.document(g, self.base)))
        g.add((cat, DCT.language, v.language(g)))
        g.add((cat, DCT.license, v.licence(g, self.base, info.licence)))
        g.add((cat, DCAT.themeTaxonomy, v.theme_scheme(g)))
        if all_feeds:
            g.add((cat, DCT.issued, _when(min(f.issued for f in all_feeds))))
            g.add((cat, DCT.modified, _when(max(f.modified for f in all_feeds))))
        themes = sorted({t for f in feeds for t in f.themes})
        for key, title, endpoint in self.service_list():
            s = URIRef(f"{self.base}catalog/services/{key}")
            self.services[key] = s
            g.add((s, RDF.type, DCAT.DataService))
            g.add((s, DCT.title, _en(title)))
            g.add((s, DCAT.endpointURL, URIRef(endpoint)))
            g.add((s, DCAT.endpointDescription, v.document(g, v.STANDARDS[key])))
            g.add((s, DCT.conformsTo, v.standard(g, key)))
            g.add((s, DCT.publisher, self.operator))
            g.add((s, DCT.accessRights, v.access_right(g, False)))
            g.add((s, DCAT.keyword, _en(key)))
            if info.contact:
                g.add(
                    (
                        s,
                        DCAT.contactPoint,
                        self.contact(URIRef(f"{self.base}catalog/operator#contact"), info.publisher, info.contact),
                    )
                )
            for t in themes:
                g.add((s, DCAT.theme, v.theme(g, t)))
            g.add((cat, DCAT.service, s))
        return cat

    def service_list(self) -> list[tuple[str, str, str]]:
        a = self.addresses
        mqtt = f"{'mqtts' if a.mqtt_tls else 'mqtt'}://{a.mqtt_host}:{a.mqtt_port}"
        kafka = "kafka://" + a.kafka_bootstrap.split(",")[0].strip()
        return [
            ("sql", "SQL (PostgreSQL): each organisation's views of what its agreements grant", a.database),
            ("kafka", "Kafka share topics share.<consumer>.<provider>.<feed> (Avro, Confluent wire format)", kafka),
            ("mqtt", "MQTT share topics share/<consumer>/<provider>/<feed>/<device> (JSON)", mqtt),
            ("registry", "Schema registry (Confluent REST API; HTTP Basic with an API token)", self.base),
        ]

    def dataset(self, cat: URIRef, f: PublishedFeed) -> None:
        g, base = self.g, self.base
        d = dataset_iri(base, f)
        g.add((cat, DCAT.dataset, d))
        g.add((d, RDF.type, DCAT.Dataset))
        g.add((d, DCT.identifier, Literal(f.key)))
        g.add((d, DCT.title, _en(title_of(f))))
        fields = ", ".join(fi.name for fi in f.fields) or "device and time only"
        g.add((d, DCT.description, _en(f"{f.description} Fields: device_id, time, {fields}.")))
        publisher = self.publisher(f.publisher)
        g.add((d, DCT.publisher, publisher))
        g.add(
            (d, DCAT.contactPoint, self.contact(URIRef(f"{publisher}#contact"), f.publisher.name, f.publisher.contact))
        )
        for word in (*f.keywords, *(fi.name for fi in f.fields)):
            g.add((d, DCAT.keyword, _en(word)))
        for t in f.themes:
            g.add((d, DCAT.theme, v.theme(g, t)))
        g.add((d, DCT.accessRights, v.access_right(g, f.open)))
        g.add((d, DCT.issued, _when(f.issued)))
        g.add((d, DCT.modified, _when(f.modified)))
        g.add((d, DCAT.landingPage, v.document(g, f"{base}#{anchor(f)}")))
        if f.first is not None and f.last is not None:
            period = URIRef(f"{d}#period")  # IRIs, not blank nodes: the Turtle stays the same from run to run
            g.add((d, DCT.temporal, period))
            g.add((period, RDF.type, DCT.PeriodOfTime))
            g.add((period, DCAT.startDate, _when(f.first)))
            g.add((period, DCAT.endDate, _when(f.last)))
        if f.bbox is not None:
            w, s, e, n = f.bbox
            area = URIRef(f"{d}#area")
            g.add((d, DCT.spatial, area))
            g.add((area, RDF.type, DCT.Location))
            polygon = f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"
            g.add((area, DCAT.bbox, Literal(polygon, datatype=v.GSP.wktLiteral)))
            g.add((area, DCAT.centroid, Literal(f"POINT({(w + e) / 2} {(s + n) / 2})", datatype=v.GSP.wktLiteral)))
        for dist in self.distributions(f):
            g.add((d, DCAT.distribution, dist))
        g.add((self.services["registry"], DCAT.servesDataset, d))

    def distributions(self, f: PublishedFeed) -> list[URIRef]:
        g, base = self.g, self.base
        d = dataset_iri(base, f)
        lic = v.licence(g, base, f.licence)
        view = names.view_name(f.publisher.id, f.name, False)
        sql_how = f"Each organisation an agreement names reads its own view, org_<organisation>.{view}[__agg]"
        if f.open:
            sql_how += f"; everyone reads {', '.join(f.open_objects)}"
        out: list[tuple[str, str, str, str | None, str | None]] = [
            ("sql", "Rows in SQL (PostgreSQL)", sql_how + ".", None, None),
        ]
        if f.kafka_streams:
            topic = names.share_topic("<consumer>", f.publisher.id, f.name) + "[.agg]"
            out.append(
                ("kafka", "Live stream on Kafka", f"Each consumer's share topic {topic}, Avro values.", "BIN", None)
            )
        if f.mqtt_streams:
            topic = names.share_mqtt_prefix("<consumer>", f.publisher.id, f.name) + "/<device> (aggregates: .agg)"
            out.append(
                (
                    "mqtt",
                    "Live stream on MQTT",
                    f"Each consumer's share topic {topic}, one JSON object a record.",
                    "JSON",
                    "JSON",
                )
            )
        made = []
        for key, title, description, fmt, media in out:
            dist = URIRef(f"{d}/distributions/{key}")
            g.add((dist, RDF.type, DCAT.Distribution))
            g.add((dist, DCT.title, _en(title)))
            g.add((dist, DCT.description, _en(description)))
            g.add((dist, DCAT.accessURL, self.services[key]))
            g.add((dist, DCAT.accessService, self.services[key]))
            g.add((dist, DCT.license, lic))
            g.add((dist, v.DCATAP.availability, v.availability(g)))
            if fmt:
                g.add((dist, DCT.format, v.file_type(g, fmt)))
            if media:
                g.add((dist, DCAT.mediaType, v.media_type(g, media)))
            if key == "kafka":
                g.add((dist, DCT.conformsTo, v.standard(g, "wire")))
            g.add((self.services[key], DCAT.servesDataset, d))
            made.append(dist)
        if f.open:
            dist = URIRef(f"{d}/distributions/open-data-csv")
            url = URIRef(f"{base}open-data/{f.publisher.id}/{f.name}.csv")
            g.add((dist, RDF.type, DCAT.Distribution))
            g.add((dist, DCT.title, _en("Open data (CSV, latest rows)")))
            g.add((dist, DCT.description, _en(f"The latest rows of {', '.join(f.open_objects)}, without a token.")))
            g.add((dist, DCAT.accessURL, url))
            g.add((dist, DCAT.downloadURL, url))
            g.add((dist, DCT.license, lic))
            g.add((dist, v.DCATAP.availability, v.availability(g)))
            g.add((dist, DCT.format, v.file_type(g, "CSV")))
            g.add((dist, DCAT.mediaType, v.media_type(g, "CSV")))
            made.append(dist)
        return made

    def paging(self, page: Page) -> None:
        g = self.g
        node = URIRef(page.url(self.base, page.number))
        g.add((node, RDF.type, v.HYDRA.PagedCollection))
        g.add((node, v.HYDRA.totalItems, Literal(page.total)))
        g.add((node, v.HYDRA.itemsPerPage, Literal(page.size)))
        # ckanext-dcat writes these as literals, current and deprecated names alike, and reads either
        for current, old, number in (
            (v.HYDRA.first, v.HYDRA.firstPage, 1),
            (v.HYDRA.last, v.HYDRA.lastPage, page.last),
            *([(v.HYDRA.next, v.HYDRA.nextPage, page.number + 1)] if page.number < page.last else []),
            *([(v.HYDRA.previous, v.HYDRA.previousPage, page.number - 1)] if page.number > 1 else []),
        ):
            g.add((node, current, Literal(page.url(self.base, number))))
            g.add((node, old, Literal(page.url(self.base, number))))


def build(
    info: CatalogInfo,
    addresses: Addresses,
    feeds: Sequence[PublishedFeed],
    all_feeds: Sequence[PublishedFeed],
    page: Page,
) -> Graph:
    """One page of the catalog: `feeds` are the page's datasets, `all_feeds` every feed (for the catalog's dates)."""
    b = _Builder(info, addresses)
    cat = b.catalog(feeds, all_feeds)
    for f in feeds:
        b.dataset(cat, f)
    b.paging(page)
    return b.g


def serialise(g: Graph, extension: str) -> bytes:
    fmt, _media = FORMATS[extension]
    if fmt == "json-ld":
        return g.serialize(format=fmt, context=JSONLD_CONTEXT, auto_compact=True).encode()
    return g.serialize(format=fmt).encode()
