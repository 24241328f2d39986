"""The example organisations and agreements, applied as a user applies them (`hub apply connectors/
organisations/ agreements/`): their expectations hold, and `hub explain` and `hub access` agree with what each
organisation's own database login can read, for every (organisation, feed) pair."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from hub.access.explain import organisations
from hub.agreement.policy import Question, decide
from hub.agreement.policy import readable as readable_now
from hub.agreement.world import load_world
from hub.control import db_credentials
from hub.control.apply import apply
from hub.control.credentials import default_dir
from hub.settings import HubSettings
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.local import cli_env
from tests.integration.examples import DEVICES, REPO, SOURCES, hub


def test_applying_the_examples_checks_their_expectations_and_again_changes_nothing(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]],
) -> None:
    settings, first = examples
    again = hub(cli_env(settings), "apply", *SOURCES)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0] == "no changes: the catalog and the database already match these files"
    assert lines[1] == "agreement expectations: 7 checked against the database, all hold"
    assert "Database login for city_data_team" in first.stdout or "Database login" not in first.stdout


async def _readable(settings: HubSettings, org: str) -> dict[str, int]:
    """What `org`'s own login can select, with its row counts (a refusal or an empty object reads 0)."""
    saved = db_credentials.load(default_dir(settings), org)
    assert saved is not None, f"no saved database login for {org}"
    conn = await asyncpg.connect(db_credentials.org_url(settings.endpoints().database_url, org, saved["password"]))
    try:
        objects = [
            f"{r[0]}.{r[1]}"
            for r in await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ]
        return {o: int(await conn.fetchval(f"SELECT count(*) FROM {o}")) for o in objects}
    finally:
        await conn.close()


async def test_explain_and_access_agree_with_the_database_for_every_organisation_and_feed(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]],
) -> None:
    settings, _ = examples
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        world = await load_world(conn)
        orgs = [o for o in await organisations(conn) if o["role_exists"]]
    finally:
        await conn.close()
    example_orgs = {
        "city_data_team",
        "health_research",
        "mobility_startup",
        "uni_air_lab",
        "city_transport",
        "voltcharge",
    }
    assert example_orgs <= {o["id"] for o in orgs}
    pairs = 0
    for org in sorted(example_orgs):
        readable = await _readable(settings, org)
        for feed in (f"{p}.{f}" for p, f in DEVICES):
            d = decide(Question(org, feed, datetime.now(UTC)), world)
            in_db = {o for o, n in readable.items() if n and o.split(".", 1)[1].split("__")[:2] == feed.split(".")}
            assert d.allowed == bool(in_db), (org, feed, d.to_json()["rules"], readable)
            assert {g.object for g in d.grants} == in_db, (org, feed)
            pairs += 1
        access = {a.object for a in readable_now(world, org, datetime.now(UTC))}
        assert access == {o for o, n in readable.items() if n}
        if org == "city_data_team":  # and as the command prints it
            printed = json.loads(hub(cli_env(settings), "access", org, "--json").stdout)["access"]
            assert {e["object"] for e in printed} == access
    assert pairs == 30


def test_explain_says_rule_by_rule_why_not(examples: tuple[HubSettings, subprocess.CompletedProcess[str]]) -> None:
    settings, _ = examples
    env = cli_env(settings)
    d = json.loads(
        hub(env, "explain", "uni_air_lab", "city_transport.traffic_counts", "--form", "raw", "--json").stdout
    )
    assert d["allowed"] is False and d["form"] is None
    (rule,) = [r for r in d["rules"] if r["rule"] == "agreement traffic_research_aggregates"]
    assert "aggregates only (buckets of 30m, at least 2 devices)" in rule["detail"] and rule["line"]
    d = json.loads(hub(env, "explain", "health_research", "air_quality", "--json").stdout)
    assert d["allowed"] and d["form"] == "raw" and d["object"] == "org_health_research.uni_air_lab__air_quality"
    assert d["grants"][0]["pseudonymised"] is True and d["grants"][0]["delay"] == "1h"
    text = hub(env, "explain", "nobody", "air_quality")
    assert text.returncode == 0 and "unknown organisation 'nobody'" in text.stdout


def test_a_consumer_connects_with_the_url_hub_db_url_prints(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]],
) -> None:
    settings, _ = examples
    url = hub(cli_env(settings), "db-url", "city_data_team").stdout.strip()
    assert url.startswith("postgresql://org_city_data_team:")
    result = subprocess.run(
        ["psql", url, "-XAtc", "SELECT current_user, count(*) FROM uni_air_lab__air_quality"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith("org_city_data_team|"), result.stderr


def test_a_broken_expectation_refuses_the_whole_apply(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    settings, _ = examples
    path = tmp_path / "strict.yaml"
    path.write_text(
        """agreements:
  - id: parking_startup_trial
    provider: city_transport
    consumers: [mobility_startup]
    purpose: Trial of a parking app
    licence: OGL-UK-3.0
    grants:
      - feed: parking_occupancy
        delay: 10m
    expect:
      - org: mobility_startup
        feed: parking_occupancy
        sees: raw
        within: 5m
"""
    )
    result = hub(cli_env(settings), "apply", *SOURCES, str(path))
    assert result.returncode == 1
    assert f"{path}:2: agreement parking_startup_trial expects" in result.stderr
    assert "delays it by 10m" in result.stderr and "holds rows back by 10m" in result.stderr
    again = hub(cli_env(settings), "plan", *SOURCES)
    assert again.stdout.startswith("no changes"), again.stdout  # nothing of it was applied


def test_odrl_export_then_import_gives_the_same_agreements(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    settings, _ = examples
    env = cli_env(settings)
    out = hub(env, "agreements", "export", "--odrl", "-o", str(tmp_path / "agreements.jsonld"))
    assert out.returncode == 0, out.stderr
    back = hub(env, "agreements", "import", str(tmp_path / "agreements.jsonld"), "-o", str(tmp_path / "back.yaml"))
    assert back.returncode == 0, back.stderr
    from hub.agreement.loader import load_agreements

    original = [a.agreement for p in sorted((REPO / "agreements").glob("*.yaml")) for a in load_agreements(p)]
    assert [a.agreement for a in load_agreements(tmp_path / "back.yaml")] == original


def test_hub_orgs_lists_partners_and_consumer_organisations(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]],
) -> None:
    rows: list[dict[str, Any]] = json.loads(hub(cli_env(examples[0]), "orgs", "--json").stdout)
    by_id = {r["id"]: r for r in rows}
    assert by_id["uni_air_lab"]["publishes"] == ["uni_air_lab.air_quality", "uni_air_lab.noise_levels"]
    assert by_id["mobility_startup"]["publishes"] == [] and by_id["mobility_startup"]["role"] == "org_mobility_startup"
    assert "open_data.uni_air_lab__noise_levels__agg" in by_id["mobility_startup"]["reads"]


def test_the_query_guide_for_organisations_runs_as_an_organisation(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]],
) -> None:
    import re

    (block,) = re.findall(r"```psql\n(.*?)```", (REPO / "docs" / "queries.md").read_text(), re.S)
    url = hub(cli_env(examples[0]), "db-url", "city_data_team").stdout.strip()
    result = subprocess.run(
        ["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=block, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "uni_air_lab__air_quality" in result.stdout and "device_id" in result.stdout


def test_revoking_from_the_command_line_ends_the_agreement_and_the_audit_trail_says_who_and_why(
    examples: tuple[HubSettings, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    settings, first = examples
    env = cli_env(settings)
    saved = default_dir(settings) / "city_data_team.db.json"
    if "Database login for city_data_team" in first.stdout:
        assert saved.stat().st_mode & 0o777 == 0o600  # the one place a password rests, owner-only
    trial = tmp_path / "trial.yaml"
    trial.write_text(
        "agreements:\n  - {id: chargers_startup_trial, provider: voltcharge, consumers: [mobility_startup],"
        " purpose: Trial, licence: CC-BY-NC-4.0, grants: [{feed: charger_status, fields: [status]}]}\n"
    )
    applied = asyncio.run(
        apply(settings, [*map(Path, SOURCES), trial], broker=LocalBrokerAuth(settings), actor="carol")
    )
    assert "+ view        org_mobility_startup.voltcharge__charger_status  (agreement chargers_startup_trial)" in (
        applied.plan.render()
    )
    revoked = hub(env, "agreements", "revoke", "chargers_startup_trial", "--reason", "trial over", "--by", "dave")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(
        "revoked chargers_startup_trial: dropped org_mobility_startup.voltcharge__charger_status;"
    )
    report = json.loads(hub(env, "audit", "--org", "mobility_startup", "--since", "1h", "--json").stdout)
    trail = [(e["agreement"], e["action"], e["actor"], e["reason"]) for e in report["events"]]
    assert ("chargers_startup_trial", "created", "carol", None) in trail
    assert ("chargers_startup_trial", "revoked", "dave", "trial over") in trail
    again = hub(env, "agreements", "revoke", "chargers_startup_trial", "--reason", "twice")
    assert again.returncode == 1 and "already revoked" in again.stderr
