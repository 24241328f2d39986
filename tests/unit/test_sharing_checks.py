"""Agreements checked against the hub they would apply to: every refusal names the file and line, and the set
of agreements left in force follows the files that were read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.agreement.grants import FeedInfo
from hub.agreement.loader import parse_agreements
from hub.catalog.agreements import AgreementRow
from hub.control.share_desired import OrgSpec, SharingDesired, desired_sharing
from hub.control.sources import Sources
from hub.errors import ConfigError

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
FEEDS = {
    "uni_air_lab.air_quality": FeedInfo(
        "uni_air_lab", "air_quality", ("pm25", "no2", "battery_v", "label"), frozenset({"pm25", "no2", "battery_v"}),
        timedelta(minutes=15),
    ),
    "city_transport.parking": FeedInfo(
        "city_transport", "parking", ("occupied", "status"), frozenset({"occupied"}), timedelta(minutes=15)
    ),
}  # fmt: skip
PARTNERS = {
    "uni_air_lab": OrgSpec("uni_air_lab", "Air Lab", "university", "a@b.c", "connectors/uni_air_lab.yaml", True),
    "city_transport": OrgSpec("city_transport", "Transport", "city", "a@b.c", "connectors/city.yaml", True),
}
CITY = OrgSpec("city_data_team", "Data Office", "city", "a@b.c", "organisations/city.yaml", False)

AGREEMENT = """\
agreements:
  - id: air_city
    provider: uni_air_lab
    consumers: [city_data_team]
    purpose: Clean-air monitoring
    licence: ODbL-1.0
    grants:
      - feed: air_quality
"""


def check(
    text: str,
    *,
    file: str = "agreements/air.yaml",
    devices: dict[str, set[str]] | None = None,
    rows: dict[str, AgreementRow] | None = None,
    sources: Sources | None = None,
) -> SharingDesired:
    loaded = parse_agreements(text, file) if text else []
    return desired_sharing(
        [], loaded, sources or Sources(), PARTNERS, FEEDS, {"city_data_team": CITY}, rows or {}, devices or {}, NOW
    )


def refused(text: str, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        check(text, **kwargs)  # type: ignore[arg-type]
    assert caught.value.file == "agreements/air.yaml"
    return caught.value


def test_a_valid_agreement_is_resolved_against_its_feed() -> None:
    desired = check(AGREEMENT + "        fields: [pm25]\n")
    (clause,) = desired.agreements["air_city"].state.clauses
    assert clause.fields == ("pm25",) and clause.feed_key == "uni_air_lab.air_quality"
    assert desired.agreements["air_city"].source == str(Path("agreements/air.yaml").resolve())


@pytest.mark.parametrize(
    ("change", "line", "reason"),
    [
        (("consumers: [city_data_team]", "consumers: [city_planning]"), 4, "unknown organisation 'city_planning'"),
        (("provider: uni_air_lab", "provider: water_works"), 3, "unknown provider 'water_works': it is not a partner"),
        (("provider: uni_air_lab", "provider: city_transport"), 8, "feed 'air_quality' belongs to uni_air_lab, not"),
        (("feed: air_quality", "feed: noise"), 8, "unknown feed 'noise': uni_air_lab publishes air_quality"),
        (("feed: air_quality", "feed: air_quality\n        fields: [pm10]"), 9, "has no field 'pm10'"),
        (
            ("feed: air_quality", "feed: air_quality\n        form: aggregate\n        fields: [label]"),
            10,
            "field 'label' is not numeric",
        ),
        (
            ("feed: air_quality", "feed: air_quality\n        form: aggregate\n        bucket: 20m"),
            10,
            "not a whole number of uni_air_lab.air_quality's rollup buckets (15m)",
        ),
        (
            ("    grants:", "    valid_until: 2026-11-01\n    grants:"),
            7,
            "valid_until 2026-11-01 00:00Z is in the past",
        ),
    ],
)
def test_an_agreement_the_hub_cannot_keep_is_refused_at_its_line(
    change: tuple[str, str], line: int, reason: str
) -> None:
    err = refused(AGREEMENT.replace(*change))
    assert err.line == line and reason in err.reason, err


def test_devices_are_checked_against_the_devices_on_record_once_there_are_any() -> None:
    text = AGREEMENT + '        devices: [st-001, "st_0*"]\n'
    desired = check(text)
    assert any("not checked" in n for n in desired.notes)
    err = refused(text, devices={"uni_air_lab.air_quality": {"st-001", "stX01", "st-002"}})
    assert err.field == "agreements[0].grants[0].devices[1]" and "pattern matches no device 'st_0*'" in err.reason
    err = refused(AGREEMENT + "        devices: [st-009]\n", devices={"uni_air_lab.air_quality": {"st-001"}})
    assert "unknown device 'st-009'" in err.reason and err.line == 9
    check(text, devices={"uni_air_lab.air_quality": {"st-001", "st_01"}})


def test_two_agreements_may_not_give_one_organisation_the_same_feed_in_the_same_form() -> None:
    second = AGREEMENT.removeprefix("agreements:\n").replace("id: air_city", "id: air_city_again")
    err = refused(AGREEMENT + second)
    assert err.line == 15 and "city_data_team already gets uni_air_lab.air_quality in form raw" in err.reason
    check(AGREEMENT + second.replace("feed: air_quality", "feed: air_quality\n        form: aggregate"))


def row(aid: str, source: str, *, status: str = "active", spec: dict[str, object] | None = None) -> AgreementRow:
    spec = spec or parse_agreements(AGREEMENT, "x").pop().agreement.model_dump(mode="json")
    revoked = (NOW, "alice", "breach") if status == "revoked" else (None, None, None)
    return AgreementRow(aid, "uni_air_lab", dict(spec), source, 2, (8,), status, *revoked, False)


def test_an_agreement_no_longer_in_a_file_that_was_read_again_is_withdrawn_and_others_are_kept(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "a" / "air.yaml", tmp_path / "b" / "other.yaml"
    rows = {"air_city": row("air_city", str(here)), "other": row("other", str(elsewhere))}
    desired = check("", rows=rows, sources=Sources(directories={here.parent}))
    assert desired.withdrawn == {"air_city": str(here)}
    assert set(desired.agreements) == {"air_city", "other"}


def test_a_revoked_agreement_stays_revoked_and_its_terms_cannot_change() -> None:
    rows = {"air_city": row("air_city", str(Path("agreements/air.yaml").resolve()), status="revoked")}
    desired = check(AGREEMENT, rows=rows)
    assert desired.agreements["air_city"].state.revoked_at == NOW and any("stays revoked" in n for n in desired.notes)
    err = refused(AGREEMENT + "        fields: [pm25]\n", rows=rows)
    assert "it stays revoked; give new terms a new id" in err.reason and err.line == 2


def test_an_agreement_id_applied_from_another_file_cannot_be_reused() -> None:
    rows = {"air_city": row("air_city", "/elsewhere/agreements.yaml")}
    err = refused(AGREEMENT, rows=rows)
    assert "already applied from /elsewhere/agreements.yaml" in err.reason


def test_an_expectation_must_name_a_known_organisation_and_field() -> None:
    text = AGREEMENT + "    expect:\n      - org: city_data_team\n        feed: air_quality\n        sees: raw\n"
    check(text)
    err = refused(text + "        without: [wind]\n")
    assert err.line == 13 and "has no field 'wind'" in err.reason
    err = refused(text.replace("- org: city_data_team", "- org: nobody"))
    assert err.line == 10 and "unknown organisation 'nobody'" in err.reason
