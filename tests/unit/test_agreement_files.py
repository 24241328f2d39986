"""Agreement and organisation files: what a provider may write, and the error (file, line, key) for what it may not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.agreement.loader import load_organisation, parse_agreements
from hub.agreement.model import Form
from hub.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = """\
agreements:
  - id: air_city
    provider: uni_air_lab
    consumers: [city_data_team]
    purpose: Clean-air monitoring
    licence: ODbL-1.0
    grants:
      - feed: air_quality
"""


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_agreements(text, "agreements/test.yaml")
    return caught.value


def test_every_example_agreement_and_organisation_file_is_valid() -> None:
    agreements = [
        a for p in sorted((REPO / "agreements").glob("*.yaml")) for a in parse_agreements(p.read_text(), str(p))
    ]
    assert len(agreements) >= 6
    forms = {g.form for a in agreements for g in a.agreement.grants}
    assert forms == {Form.raw, Form.aggregate}
    assert any(a.agreement.everyone for a in agreements)
    assert any(g.pseudonymise for a in agreements for g in a.agreement.grants)
    assert any(g.delay > timedelta(0) for a in agreements for g in a.agreement.grants)
    assert any(a.agreement.valid_until for a in agreements) and any(a.agreement.expect for a in agreements)
    devices = [d for a in agreements for g in a.agreement.grants for d in g.devices or ()]
    assert any("*" in d for d in devices) and any("*" not in d for d in devices)
    for p in sorted((REPO / "organisations").glob("*.yaml")):
        assert load_organisation(p).organisation.id == p.stem


def test_a_grant_defaults_to_raw_rows_of_every_field_and_device_at_once_for_sql() -> None:
    (loaded,) = parse_agreements(BASE, "a.yaml")
    g = loaded.agreement.grants[0]
    assert (g.form, g.fields, g.devices, g.pseudonymise, g.delay) == (Form.raw, None, None, False, timedelta(0))
    assert [str(d) for d in loaded.agreement.delivery] == ["sql"]
    assert loaded.line("grants", 0) == 8


def test_a_misspelt_key_is_named_with_its_line_and_the_key_it_was_meant_to_be() -> None:
    err = refused(BASE + "        pseudonymize: true\n")
    assert (err.file, err.line, err.field) == ("agreements/test.yaml", 9, "agreements[0].grants[0].pseudonymize")
    assert "did you mean 'pseudonymise'" in err.reason


@pytest.mark.parametrize(
    ("extra", "line", "field", "reason"),
    [
        (
            "        form: aggregate\n        pseudonymise: true\n",
            10,
            "grants[0].pseudonymise",
            "aggregates carry no device",
        ),
        ("        bucket: 1h\n", 9, "grants[0].bucket", "is for form: aggregate"),
        ("        fields: [pm25, time]\n", 9, "grants[0].fields[1]", "always included"),
        ("        fields: []\n", 9, "grants[0].fields", "fields is empty"),
        ("        devices: [st-1, st-1]\n", 9, "grants[0].devices[1]", "listed twice"),
        ("        delay: soon\n", 9, "grants[0].delay", "is not a duration"),
        ("      - feed: air_quality\n", 9, "grants[1].feed", "granted in form raw twice"),
    ],
)
def test_a_grant_that_contradicts_itself_is_refused_at_its_line(extra: str, line: int, field: str, reason: str) -> None:
    err = refused(BASE + extra)
    assert err.line == line and err.field == f"agreements[0].{field}", err
    assert reason in err.reason


def test_an_agreement_that_ends_before_it_starts_is_refused() -> None:
    text = BASE.replace("    grants:", "    valid_from: 2027-03-01\n    valid_until: 2027-02-01\n    grants:")
    err = refused(text)
    assert err.field == "agreements[0].valid_until" and err.line == 8
    assert "would never be in force" in err.reason


def test_a_date_time_without_a_zone_is_refused_and_a_date_means_midnight_utc() -> None:
    err = refused(BASE.replace("    grants:", "    valid_until: 2027-02-01T12:00:00\n    grants:"))
    assert "no time zone" in err.reason and err.line == 7
    (loaded,) = parse_agreements(BASE.replace("    grants:", "    valid_until: 2027-02-01\n    grants:"), "a.yaml")
    assert loaded.agreement.valid_until == datetime(2027, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("consumers", "reason"),
    [
        ("[]", "consumers is empty"),
        ("[city_data_team, everyone]", "`everyone` stands alone"),
        ("[uni_air_lab]", "reads its own feeds already"),
        ("all", "the word everyone"),
        ("[org_city]", "reserved by the hub"),
    ],
)
def test_consumers_are_organisations_or_everyone(consumers: str, reason: str) -> None:
    err = refused(BASE.replace("[city_data_team]", consumers))
    assert reason in err.reason and err.line == 4, err


def test_sql_is_always_delivered_and_streams_can_be_asked_for_too() -> None:
    err = refused(BASE.replace("    grants:", "    delivery: [kafka]\n    grants:"))
    assert "sql is always delivered" in err.reason
    (ok,) = parse_agreements(BASE.replace("    grants:", "    delivery: [sql, kafka, mqtt]\n    grants:"), "a.yaml")
    assert [str(d) for d in ok.agreement.delivery] == ["sql", "kafka", "mqtt"]


def test_yaml_anchors_are_refused_before_they_can_expand() -> None:
    err = refused(BASE + "    expect: &x []\n")
    assert "anchors and aliases" in err.reason and err.line == 9


def test_two_agreements_of_one_file_may_not_share_an_id() -> None:
    err = refused(BASE + BASE.removeprefix("agreements:\n"))
    assert err.field == "agreements[1].id" and err.line == 9


def test_an_expectation_says_sees_or_never() -> None:
    err = refused(BASE + "    expect:\n      - org: city_data_team\n        feed: air_quality\n")
    assert "either `sees:" in err.reason and err.line == 10
    err = refused(
        BASE
        + "    expect:\n      - org: city_data_team\n        feed: air_quality\n"
        + "        never: raw\n        within: 5m\n"
    )
    assert "goes with `sees:`" in err.reason and err.line == 13


def test_an_organisation_file_names_its_errors_too(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("organisation:\n  id: Org-1\n  name: X\n  kind: city\n  contact: a@b.c\n")
    with pytest.raises(ConfigError) as caught:
        load_organisation(path)
    assert caught.value.line == 2 and "not a safe identifier" in caught.value.reason
