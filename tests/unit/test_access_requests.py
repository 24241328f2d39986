"""Access requests, pure: what an organisation may ask for, the agreement an approval writes, the matrix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.agreement.access_request import RequestSpec, agreement_file_text, check, normalised
from hub.agreement.grants import FeedInfo, Org, resolve
from hub.agreement.loader import parse_agreements
from hub.agreement.matrix import matrix
from hub.agreement.model import Form
from hub.agreement.policy import Question, World, decide, open_data
from hub.catalog.access_requests import RequestRow
from hub.errors import AccessDenied, ConfigError, NotFound

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
AIR = FeedInfo("lab", "air", ("pm25", "no2", "label"), frozenset({"pm25", "no2"}), timedelta(minutes=15))
NOISE = FeedInfo("lab", "noise", ("laeq",), frozenset({"laeq"}), timedelta(minutes=15))
ORGS = {o.id: o for o in (Org("lab", "Lab", "university", True), Org("city", "City", "city", False))}
TEXT = """\
agreements:
  - {id: air_agg, provider: lab, consumers: [city], purpose: p, licence: L, valid_until: 2027-01-01,
     delivery: [sql, kafka], grants: [{feed: air, form: aggregate, fields: [pm25]}]}
  - {id: noise_open, provider: lab, consumers: everyone, purpose: p, licence: CC0-1.0, grants: [{feed: noise}]}
"""


def world(extra: str | None = None) -> World:
    feeds = {AIR.key: AIR, NOISE.key: NOISE}
    loaded = parse_agreements(TEXT, "a.yaml") + (parse_agreements(extra, "b.yaml") if extra else [])
    return World(ORGS, feeds, tuple(resolve(a.agreement, feeds) for a in loaded))


def spec(**kw: object) -> RequestSpec:
    base: dict[str, object] = {"consumer": "city", "feed": "lab.air", "purpose": "schools"}
    return RequestSpec(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "error", "says"),
    [
        ({"consumer": "lab"}, ConfigError, "publishes lab.air"),
        ({"consumer": "nobody"}, NotFound, "unknown organisation"),
        ({"feed": "lab.water"}, NotFound, "unknown feed"),
        ({"fields": ("pm25", "o3")}, ConfigError, "no field o3"),
        ({"form": Form.aggregate, "fields": ("label",)}, ConfigError, "label is not"),
        ({"purpose": "  "}, ConfigError, "what the data is for"),
        ({"delivery": ("sql", "ftp")}, ConfigError, "unknown delivery ftp"),
        ({"valid_until": NOW - timedelta(days=1)}, ConfigError, "in the past"),
        ({"form": Form.aggregate, "fields": ("pm25",)}, AccessDenied, "already"),  # air_agg grants it
        ({"feed": "lab.noise"}, AccessDenied, "open_data.lab__noise"),  # open data
    ],
)
def test_a_request_that_cannot_be_granted_is_refused_naming_why(kw: dict[str, object], error: type, says: str) -> None:
    with pytest.raises(error, match=says):
        check(spec(**kw), world(), NOW)


def test_a_request_for_raw_rows_of_a_feed_read_as_aggregates_can_be_made() -> None:
    assert check(spec(fields=("pm25",)), world(), NOW) == AIR


def test_an_approval_writes_an_agreement_the_loader_reads_granting_exactly_what_was_asked() -> None:
    asked = normalised(
        spec(fields=("pm25", "no2"), delivery=("mqtt", "sql", "mqtt"), valid_until=NOW + timedelta(days=30))
    )
    row = RequestRow(
        7, "city", "lab", "air", "raw", asked.fields, asked.delivery, asked.purpose, asked.valid_until, "pending",
        NOW, "city (API token t)", None, None, None, None, None,
    )  # fmt: skip
    text = agreement_file_text(row, "ODbL-1.0", "lab (API token x)\nagreements: [evil]", NOW)
    [loaded] = parse_agreements(text, "agreements/request_7.yaml")
    assert text.count("\nagreements:") == 1  # a name with a line break stays inside its comment
    a = loaded.agreement
    assert (a.id, a.provider, a.consumers, a.licence, a.valid_until) == (
        "request_7",
        "lab",
        ["city"],
        "ODbL-1.0",
        NOW + timedelta(days=30),
    )
    assert [str(d) for d in a.delivery] == ["sql", "mqtt"]
    after = world(text)
    decision = decide(Question("city", "lab.air", NOW, Form.raw), after)
    assert decision.allowed and decision.object == "org_city.lab__air"
    assert decision.grants[0].clause.fields == ("pm25", "no2")
    assert (decision.grants[0].kafka_topic, decision.grants[0].mqtt_topic) == (None, "share/city/lab/air/+")


def test_open_data_is_what_agreements_with_everyone_grant_in_force() -> None:
    assert [a.object for a in open_data(world(), NOW)] == ["open_data.lab__noise"]


def test_the_matrix_has_providers_in_rows_and_consumers_with_everyone_last_in_columns() -> None:
    m = matrix(world(), NOW)
    assert (m.providers, m.consumers) == (("lab",), ("city", "everyone"))
    [cell] = m.at("lab", "city")
    assert (cell.feed, cell.form, cell.state, cell.delivery) == ("air", "aggregate", "in force", ("sql", "kafka"))
    assert matrix(world(), datetime(2027, 2, 1, tzinfo=UTC)).at("lab", "city")[0].state == "expired"
