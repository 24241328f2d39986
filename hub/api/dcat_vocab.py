"""The vocabularies the DCAT-AP 3 catalog uses, typed and labelled as the official shapes require.

The range shapes check `sh:class` against `rdf:type` triples in the catalog itself (a validator does not fetch
the EU vocabularies), and every `skos:Concept` needs a `skos:prefLabel`: so each vocabulary IRI the catalog
uses is typed, and each concept labelled, where it is used (`typed`).
"""

from __future__ import annotations

import re

from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS as DCT
from rdflib.namespace import FOAF, RDF, SKOS

from hub.connector.model import THEME_LABELS

VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
DCATAP = Namespace("http://data.europa.eu/r5r/")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
GSP = Namespace("http://www.opengis.net/ont/geosparql#")

EU = "http://publications.europa.eu/resource/authority/"
ACCESS_PUBLIC = URIRef(EU + "access-right/PUBLIC")
ACCESS_RESTRICTED = URIRef(EU + "access-right/RESTRICTED")
THEMES = URIRef(EU + "data-theme")
LANG_ENG = URIRef(EU + "language/ENG")
STABLE = URIRef(EU + "planned-availability/STABLE")
FILE_TYPE = {k: URIRef(EU + "file-type/" + k) for k in ("CSV", "JSON", "BIN")}
IANA = "https://www.iana.org/assignments/media-types/"
MEDIA_TYPE = {"CSV": URIRef(IANA + "text/csv"), "JSON": URIRef(IANA + "application/json")}

PUBLISHER_TYPE = "http://purl.org/adms/publishertype/"
PUBLISHER_TYPES = {
    "LocalAuthority": "Local Authority",
    "Academia-ScientificOrganisation": "Academia/Scientific organisation",
    "Company": "Company",
    "NationalAuthority": "National authority",
    "RegionalAuthority": "Regional authority",
    "PrivateIndividual(s)": "Private Individual(s)",
    "NonGovernmentalOrganisation": "Non-Governmental Organisation",
    "PublicBody": "Public body",
}
KIND_TO_PUBLISHER_TYPE = {
    "city": "LocalAuthority",
    "university": "Academia-ScientificOrganisation",
    "private": "Company",
}

LICENCE_TYPE = "http://purl.org/adms/licencetype/"
LICENCE_TYPES = {
    "Attribution": "Attribution",
    "PublicDomain": "Public domain",
    "ShareAlike": "Share-alike",
    "NonCommercialUse": "Non-commercial use only",
    "NoDerivativeWork": "No derivative work",
}
SPDX = "http://spdx.org/licenses/"
_SPDX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")

# What each DataService follows, for dct:conformsTo and dcat:endpointDescription.
STANDARDS = {
    "sql": "https://www.postgresql.org/docs/current/protocol.html",
    "kafka": "https://kafka.apache.org/protocol",
    "mqtt": "https://docs.oasis-open.org/mqtt/mqtt/v5.0/mqtt-v5.0.html",
    "registry": "https://docs.confluent.io/platform/current/schema-registry/develop/api.html",
    "wire": "https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html",
}


def concept(g: Graph, iri: URIRef, label: str, scheme: URIRef | None = None) -> URIRef:
    g.add((iri, RDF.type, SKOS.Concept))
    g.add((iri, SKOS.prefLabel, Literal(label, lang="en")))
    if scheme is not None:
        g.add((iri, SKOS.inScheme, scheme))
    return iri


def theme_scheme(g: Graph) -> URIRef:
    g.add((THEMES, RDF.type, SKOS.ConceptScheme))
    g.add((THEMES, DCT.title, Literal("Data theme", lang="en")))
    return THEMES


def theme(g: Graph, code: str) -> URIRef:
    return concept(g, URIRef(f"{EU}data-theme/{code}"), THEME_LABELS.get(code, code), theme_scheme(g))


def access_right(g: Graph, public: bool) -> URIRef:
    iri = ACCESS_PUBLIC if public else ACCESS_RESTRICTED
    g.add((iri, RDF.type, DCT.RightsStatement))
    return iri


def file_type(g: Graph, code: str) -> URIRef:
    g.add((FILE_TYPE[code], RDF.type, DCT.MediaTypeOrExtent))
    return FILE_TYPE[code]


def media_type(g: Graph, code: str) -> URIRef:
    g.add((MEDIA_TYPE[code], RDF.type, DCT.MediaType))
    return MEDIA_TYPE[code]


def publisher_type(g: Graph, code: str) -> URIRef:
    return concept(g, URIRef(PUBLISHER_TYPE + code), PUBLISHER_TYPES.get(code, code))


def licence_types(name: str) -> list[str]:
    """The ADMS licence types of a licence, from its SPDX-style name (none when it says nothing recognisable)."""
    n = name.upper()
    if n.startswith(("CC0", "PDDL")):
        return ["PublicDomain"]
    out = []
    if "BY" in n or n.startswith(("ODBL", "OGL", "ODC")):
        out.append("Attribution")
    if "-SA" in n or n.startswith("ODBL"):
        out.append("ShareAlike")
    if "-NC" in n:
        out.append("NonCommercialUse")
    if "-ND" in n:
        out.append("NoDerivativeWork")
    return out


def licence(g: Graph, base: str, name: str) -> URIRef:
    """A licence document: SPDX's IRI for an SPDX id, else one under the hub's own address."""
    iri = URIRef(SPDX + name if _SPDX_ID.fullmatch(name) else f"{base}licences/{re.sub(r'[^A-Za-z0-9]+', '-', name)}")
    g.add((iri, RDF.type, DCT.LicenseDocument))
    g.add((iri, DCT.title, Literal(name)))
    for t in licence_types(name):
        g.add((iri, DCT.type, concept(g, URIRef(LICENCE_TYPE + t), LICENCE_TYPES[t])))
    return iri


def document(g: Graph, iri: str) -> URIRef:
    ref = URIRef(iri)
    g.add((ref, RDF.type, FOAF.Document))
    return ref


def standard(g: Graph, key: str) -> URIRef:
    ref = URIRef(STANDARDS[key])
    g.add((ref, RDF.type, DCT.Standard))
    return ref


def language(g: Graph) -> URIRef:
    g.add((LANG_ENG, RDF.type, DCT.LinguisticSystem))
    return LANG_ENG


def availability(g: Graph) -> URIRef:
    return concept(g, STABLE, "Stable")
