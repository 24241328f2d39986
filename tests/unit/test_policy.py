"""The policy decision: may ORG read FEED at TIME, in what form, by which clause, or rule by rule why not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.agreement.expectations import ObjectFact, problems
from hub.agreement.grants import FeedInfo, resolve
from hub.agreement.loader import parse_agreements
from hub.agreement.model import Expectation, Form
from hub.agreement.policy import Question, World, decide, readable
from tests.unit.policy_world import AGREEMENTS as TEXT
from tests.unit.policy_world import ORGS

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
AIR = FeedInfo(
    "lab", "air", ("pm25", "no2", "battery_v", "label"), frozenset({"pm25", "no2", "battery_v"}), timedelta(minutes=15)
)
NOISE = FeedInfo("lab", "noise", ("laeq",), frozenset({"laeq"}), timedelta(minutes=15))


def world(revoked: bool = False) -> World:
    feeds = {AIR.key: AIR, NOISE.key: NOISE}
    states = []
    for loaded in parse_agreements(TEXT, "agreements/lab.yaml"):
        lines = tuple(loaded.line("grants", i) or 0 for i in range(len(loaded.agreement.grants)))
        gone = (
            (NOW - timedelta(days=1), "alice", "data breach") if revoked and loaded.agreement.id == "air_city" else None
        )
        states.append(
            resolve(
                loaded.agreement,
                feeds,
                file="agreements/lab.yaml",
                line=loaded.line(),
                clause_lines=lines,
                revoked=gone,
            )
        )
    return World(ORGS, feeds, tuple(states))


def ask(org: str, feed: str, at: datetime = NOW, **kw: object) -> dict[str, object]:
    return decide(Question(org, feed, at, **kw), world()).to_json()  # type: ignore[arg-type]


def test_a_clause_in_force_allows_its_form_and_names_the_object_the_agreement_and_its_line() -> None:
    d = ask("city", "lab.air")
    assert d["allowed"] is True and d["form"] == "raw" and d["object"] == "org_city.lab__air"
    (grant,) = d["grants"]  # type: ignore[misc]
    assert grant["agreement"] == "air_city" and grant["line"] == 10 and grant["file"] == "agreements/lab.yaml"
    assert grant["fields"] == ["pm25", "no2"] and grant["device_patterns"] == ["st-2*"] and grant["delay"] == "15m"
    rule = next(r for r in d["rules"] if r["rule"] == "agreement air_city")  # type: ignore[union-attr]
    assert rule["ok"] and rule["object"] == "org_city.lab__air" and "Clean air" in rule["detail"]


def test_every_refusal_says_which_rule_failed() -> None:
    def why(org: str, feed: str, **kw: object) -> list[str]:
        d = ask(org, feed, **kw)
        assert d["allowed"] is False and d["form"] is None and d["object"] is None
        return [r["detail"] for r in d["rules"] if not r["ok"]]  # type: ignore[union-attr]

    assert "unknown organisation 'nobody'" in why("nobody", "lab.air")[0]
    assert "unknown feed 'lab.wind'" in why("city", "lab.wind")[0]
    assert why("city", "lab.air", at=datetime(2026, 12, 2, tzinfo=UTC))[0] == "expired on 2026-12-01T00:00:00Z"
    assert "not yet in force: valid from 2026-11-01" in why("city", "lab.air", at=datetime(2026, 10, 1, tzinfo=UTC))[0]
    assert "field battery_v not granted (granted: pm25, no2)" in why("city", "lab.air", fields=("battery_v",))[0]
    assert "aggregates only (buckets of 1h, at least 3 devices)" in why("research", "lab.air", form=Form.raw)[1]
    assert "is for city, not research" in why("research", "lab.air", form=Form.raw)[0]
    d = decide(Question("city", "lab.air", NOW), world(revoked=True)).to_json()
    assert (
        d["allowed"] is False and "revoked on" in d["rules"][2]["detail"] and "data breach" in d["rules"][2]["detail"]
    )


def test_a_feed_nobody_shares_is_refused_because_no_agreement_grants_it() -> None:
    feeds = {
        **world().feeds,
        "lab.wind": FeedInfo("lab", "wind", ("speed",), frozenset({"speed"}), timedelta(minutes=15)),
    }
    d = decide(Question("city", "lab.wind", NOW), World(ORGS, feeds, world().agreements)).to_json()
    assert d["rules"][-1] == {"rule": "agreements", "ok": False, "detail": "no agreement grants lab.wind to anyone"}


def test_aggregates_only_allows_aggregates_and_says_so() -> None:
    d = ask("research", "lab.air")
    assert d["allowed"] is True and d["form"] == "aggregate" and d["object"] == "org_research.lab__air__agg"
    assert d["grants"][0]["bucket"] == "1h" and d["grants"][0]["min_devices"] == 3  # type: ignore[index]


def test_open_data_is_for_every_organisation_from_one_object() -> None:
    for org in ("city", "research", "lab"):
        d = ask(org, "noise")
        grant = next(g for g in d["grants"] if g["agreement"] == "noise_open")  # type: ignore[union-attr]
        assert d["allowed"] and grant["object"] == "open_data.lab__noise" and grant["pseudonymised"] is True


def test_a_provider_reads_its_own_feed_raw_with_every_field() -> None:
    d = ask("lab", "air")
    assert d["allowed"] and d["object"] == "org_lab.lab__air"
    assert d["rules"][2]["rule"] == "owner" and d["grants"][0]["fields"] == ["pm25", "no2", "battery_v", "label"]  # type: ignore[index]


def test_readable_lists_everything_an_organisation_can_read_now() -> None:
    objects = [a.object for a in readable(world(), "city", NOW)]
    assert objects == ["org_city.lab__air", "open_data.lab__noise"]
    assert [a.object for a in readable(world(), "city", datetime(2027, 1, 1, tzinfo=UTC))] == ["open_data.lab__noise"]


def test_an_expectation_fails_when_either_witness_disagrees() -> None:
    decision = decide(Question("city", "lab.air", NOW), world())
    late = Expectation(org="city", feed="air", sees=Form.raw, within=timedelta(minutes=5))
    raw_fact = ObjectFact(
        "org_city.lab__air", Form.raw, frozenset({"device_id", "time", "pm25"}), timedelta(minutes=15)
    )
    found = problems(late, decision, [raw_fact])
    assert any("delays it by 15m" in p for p in found) and any("holds rows back by 15m" in p for p in found)
    never = Expectation(org="city", feed="air", never="raw")
    assert problems(never, decision, [])[0].startswith("the agreements grant it")
    assert problems(Expectation(org="city", feed="air", sees=Form.raw), decision, []) == [
        "its role can select no raw object of this feed"
    ]
    hidden = Expectation(org="city", feed="air", sees=Form.raw, without=["battery_v"])
    assert problems(hidden, decision, [raw_fact]) == []


def test_hub_audit_says_plainly_why_read_auditing_is_off() -> None:
    from hub.access.audit import parse_pgaudit, why_not_auditing

    on = {"pgaudit_installed": True, "pgaudit_preloaded": True, "logging_collector": True, "log_destination": "jsonlog"}
    assert why_not_auditing(on) is None  # type: ignore[arg-type]
    assert "not installed" in why_not_auditing({**on, "pgaudit_installed": False})  # type: ignore[arg-type, operator]
    assert "not in shared_preload_libraries" in why_not_auditing({**on, "pgaudit_preloaded": False})  # type: ignore[arg-type, operator]
    assert "jsonlog" in why_not_auditing({**on, "log_destination": "stderr"})  # type: ignore[arg-type, operator]
    line = "AUDIT: SESSION,3,1,READ,SELECT,VIEW,org_x.v,\"SELECT a, b FROM v WHERE c = '1,2'\",<none>,7"
    parsed = parse_pgaudit(line)
    assert parsed["object_name"] == "org_x.v" and parsed["statement"].endswith("'1,2'") and parsed["rows"] == "7"
