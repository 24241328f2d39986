"""Agreements as ODRL 2.2 `Agreement` policies (JSON-LD), and back.

ODRL's own terms carry what ODRL can say: `assigner` (the provider), `assignee` (the organisations, or
a `PartyCollection` for everyone), `target` (a feed), the action (`use` for raw rows, `aggregate` for
aggregates only), and constraints with `purpose`, `dateTime` (the validity window), `delayPeriod` (the
delay), `timeInterval` (the bucket) and `deliveryChannel`; pseudonymised ids are an `anonymize` duty. The
rest uses the hub's profile: `hub:field`, `hub:device` (ids and `*` patterns), `hub:minDevices` (k),
`dct:license`, and `hub:expect` (the agreement's tests, as a JSON literal). Importing an export gives the
same agreement (tests/unit/test_odrl.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from hub.agreement.model import EVERYONE, Agreement, Form
from hub.errors import ConfigError

PROFILE = "https://civic-hub.example/ns/sharing"
CONTEXT: list[Any] = [
    "http://www.w3.org/ns/odrl.jsonld",
    {"hub": PROFILE + "#", "dct": "http://purl.org/dc/terms/", "xsd": "http://www.w3.org/2001/XMLSchema#"},
]
AGREEMENT = "urn:civic-hub:agreement:"
ORG = "urn:civic-hub:org:"
FEED = "urn:civic-hub:feed:"
EVERYONE_URN = "urn:civic-hub:everyone"
PSEUDONYMS = "hmac-sha256-per-agreement"
_DURATION = re.compile(r"^PT(\d+)S$")


def _duration(td: timedelta) -> dict[str, str]:
    return {"@value": f"PT{int(td.total_seconds())}S", "@type": "xsd:duration"}


def _constraint(left: str, op: str, right: Any) -> dict[str, Any]:
    return {"leftOperand": left, "operator": op, "rightOperand": right}


def to_odrl(a: Agreement) -> dict[str, Any]:
    common = [_constraint("purpose", "eq", a.purpose)]
    if a.valid_from:
        common.append(_constraint("dateTime", "gteq", {"@value": _iso(a.valid_from), "@type": "xsd:dateTime"}))
    if a.valid_until:
        common.append(_constraint("dateTime", "lt", {"@value": _iso(a.valid_until), "@type": "xsd:dateTime"}))
    common.append(_constraint("deliveryChannel", "isAnyOf", [f"hub:{d}" for d in a.delivery]))
    permissions = []
    for g in a.grants:
        constraints = list(common)
        if g.delay:
            constraints.append(_constraint("delayPeriod", "gteq", _duration(g.delay)))
        if g.fields is not None:
            constraints.append(_constraint("hub:field", "isAnyOf", list(g.fields)))
        if g.devices is not None:
            constraints.append(_constraint("hub:device", "isAnyOf", list(g.devices)))
        if g.bucket is not None:
            constraints.append(_constraint("timeInterval", "gteq", _duration(g.bucket)))
        if g.min_devices is not None:
            constraints.append(_constraint("hub:minDevices", "gteq", {"@value": g.min_devices, "@type": "xsd:integer"}))
        permission: dict[str, Any] = {
            "target": f"{FEED}{a.provider}.{g.feed}",
            "action": "aggregate" if g.form == Form.aggregate else "use",
            "constraint": constraints,
        }
        if g.pseudonymise:
            permission["duty"] = [{"action": "anonymize", "constraint": [_constraint("hub:method", "eq", PSEUDONYMS)]}]
        permissions.append(permission)
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "Agreement",
        "uid": AGREEMENT + a.id,
        "profile": PROFILE,
        "assigner": ORG + a.provider,
        "assignee": (
            {"@type": "PartyCollection", "uid": EVERYONE_URN} if a.everyone else [ORG + o for o in a.consumers]
        ),
        "dct:license": a.licence,
        "permission": permissions,
    }
    if a.expect:
        doc["hub:expect"] = {
            "@type": "@json",
            "@value": [e.model_dump(mode="json", exclude_none=True) for e in a.expect],
        }
    return doc


def export(agreements: list[Agreement]) -> dict[str, Any]:
    """Several agreements as one JSON-LD document (a graph of ODRL Agreements)."""
    return {
        "@context": CONTEXT,
        "@graph": [{k: v for k, v in to_odrl(a).items() if k != "@context"} for a in agreements],
    }


def _iso(t: Any) -> str:
    return str(t.isoformat()).replace("+00:00", "Z")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(message, field=where)


def _strip(value: str, prefix: str, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(prefix):
        raise _fail(where, f"expected an id starting {prefix!r}, got {value!r}")
    return value.removeprefix(prefix)


def _seconds(value: Any, where: str) -> str:
    text = value.get("@value") if isinstance(value, dict) else value
    m = _DURATION.fullmatch(str(text))
    if not m:
        raise _fail(where, f"expected an xsd:duration such as PT900S, got {text!r}")
    return f"{m.group(1)}s"


def from_odrl(doc: dict[str, Any], where: str = "") -> Agreement:
    """One ODRL Agreement written by `to_odrl` back into an agreement (other ODRL is refused, saying where)."""
    if doc.get("@type") != "Agreement":
        raise _fail(where, f"expected an ODRL Agreement, got @type {doc.get('@type')!r}")
    data: dict[str, Any] = {
        "id": _strip(doc.get("uid", ""), AGREEMENT, f"{where}uid"),
        "provider": _strip(doc.get("assigner", ""), ORG, f"{where}assigner"),
        "licence": doc.get("dct:license"),
        "grants": [],
    }
    assignee = doc.get("assignee")
    if isinstance(assignee, dict) and assignee.get("uid") == EVERYONE_URN:
        data["consumers"] = EVERYONE
    else:
        data["consumers"] = [_strip(o, ORG, f"{where}assignee") for o in (assignee or [])]
    common: dict[str, Any] | None = None
    for i, p in enumerate(doc.get("permission", [])):
        at = f"{where}permission[{i}]."
        target = _strip(p.get("target", ""), FEED, at + "target")
        provider, _, feed = target.partition(".")
        if provider != data["provider"]:
            raise _fail(at + "target", f"{target} is not a feed of the assigner {data['provider']}")
        grant: dict[str, Any] = {"feed": feed, "form": "aggregate" if p.get("action") == "aggregate" else "raw"}
        if p.get("action") not in ("use", "aggregate"):
            raise _fail(at + "action", f"expected action use or aggregate, got {p.get('action')!r}")
        shared: dict[str, Any] = {}
        for j, c in enumerate(p.get("constraint", [])):
            left, op, right = c.get("leftOperand"), c.get("operator"), c.get("rightOperand")
            here = f"{at}constraint[{j}]"
            if left == "purpose":
                shared["purpose"] = right
            elif left == "dateTime":
                shared["valid_from" if op == "gteq" else "valid_until"] = right["@value"]
            elif left == "deliveryChannel":
                shared["delivery"] = [_strip(d, "hub:", here) for d in right]
            elif left == "delayPeriod":
                grant["delay"] = _seconds(right, here)
            elif left == "hub:field":
                grant["fields"] = list(right)
            elif left == "hub:device":
                grant["devices"] = list(right)
            elif left == "timeInterval":
                grant["bucket"] = _seconds(right, here)
            elif left == "hub:minDevices":
                grant["min_devices"] = int(right["@value"] if isinstance(right, dict) else right)
            else:
                raise _fail(here, f"unknown constraint {left!r}")
        if common is not None and shared != common:
            raise _fail(at + "constraint", "purpose, dateTime and deliveryChannel differ between permissions")
        common = shared
        grant["pseudonymise"] = any(d.get("action") == "anonymize" for d in p.get("duty", []))
        data["grants"].append(grant)
    data.update(common or {})
    expect = doc.get("hub:expect")
    if expect:
        data["expect"] = expect["@value"] if isinstance(expect, dict) else expect
    try:
        return Agreement.model_validate(data)
    except ValueError as exc:
        raise _fail(where or "agreement", f"not a valid agreement: {exc}") from None


def import_document(doc: dict[str, Any]) -> list[Agreement]:
    graph = doc.get("@graph")
    if graph is None:
        return [from_odrl(doc)]
    return [from_odrl(item, f"@graph[{i}].") for i, item in enumerate(graph)]
