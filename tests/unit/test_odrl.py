"""Agreements as ODRL 2.2 Agreements (JSON-LD): the export keeps every constraint, and importing it gives
the same agreement back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.agreement.loader import load_agreements
from hub.agreement.odrl import export, from_odrl, import_document, to_odrl
from hub.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [a.agreement for p in sorted((REPO / "agreements").glob("*.yaml")) for a in load_agreements(p)]


def test_every_example_agreement_survives_a_round_trip_through_odrl_json() -> None:
    doc = json.loads(json.dumps(export(EXAMPLES)))
    assert import_document(doc) == EXAMPLES


def test_the_export_says_it_in_odrl_terms() -> None:
    by_id = {a.id: to_odrl(a) for a in EXAMPLES}
    study = by_id["air_exposure_study"]
    assert study["@type"] == "Agreement" and study["uid"] == "urn:civic-hub:agreement:air_exposure_study"
    assert study["assigner"] == "urn:civic-hub:org:uni_air_lab"
    assert study["assignee"] == ["urn:civic-hub:org:health_research"]
    (permission,) = study["permission"]
    assert permission["action"] == "use" and permission["duty"][0]["action"] == "anonymize"
    operands = {c["leftOperand"]: c for c in permission["constraint"]}
    assert operands["delayPeriod"]["rightOperand"]["@value"] == "PT3600S"
    assert [c["operator"] for c in permission["constraint"] if c["leftOperand"] == "dateTime"] == ["gteq", "lt"]
    assert operands["purpose"]["rightOperand"].startswith("Exposure study")
    noise = by_id["noise_open_data"]
    assert noise["assignee"]["@type"] == "PartyCollection" and noise["permission"][0]["action"] == "aggregate"
    assert {c["leftOperand"] for c in noise["permission"][0]["constraint"]} >= {"timeInterval", "hub:minDevices"}


def test_an_odrl_document_the_hub_did_not_write_is_refused_saying_where() -> None:
    doc = to_odrl(EXAMPLES[0])
    doc["permission"][0]["constraint"].append({"leftOperand": "spatial", "operator": "eq", "rightOperand": "EU"})
    with pytest.raises(ConfigError) as caught:
        from_odrl(doc)
    assert caught.value.field.startswith("permission[0].constraint[") and "unknown constraint 'spatial'" in str(
        caught.value
    )
    with pytest.raises(ConfigError, match="expected an ODRL Agreement"):
        from_odrl({"@type": "Offer"})
