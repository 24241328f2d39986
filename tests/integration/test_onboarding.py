"""Onboarding a partner the examples do not cover, through the CLI, on the real stack.

A water utility writes one connector config and one Avro schema, runs `hub plan` and `hub apply`,
and gets MQTT credentials for its own namespace, a Kafka topic, a table and a rollup. Re-applying
changes nothing; a compatible schema change adds a column; an incompatible one and every kind of
bad input are refused with the place and the reason, and leave everything as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hub.control.apply import apply
from hub.kafka import KafkaAdmin
from hub.mqtt_auth.dynsec import DynsecBroker
from hub.settings import HubSettings
from hub.stack.broker_auth import LocalBrokerAuth
from tests.feeds import FLOW_M3S, LEVEL_M, RIVERTON_PARTNER, river_level
from tests.integration.support import REPO, Device, hub_listener, unique

HUB = [sys.executable, "-m", "hub"]

CONFIG = (
    "# A water utility's river gauges: level every 5 minutes, flow where the gauge measures it.\n"
    + RIVERTON_PARTNER.format(partner="PARTNER")
    + """
feeds:
  - name: river_levels
    description: Water level and flow at river gauges, every 5 minutes.
    licence: CC-BY-4.0
    schema: river_level
    topic: rivers/{device_id}/level
    format: json
    time:
      field: ts
      format: epoch_s
    fields:
      level_m: lvl
      flow_m3s:
        source: flow_lps
        scale: 0.001
    retention: 400d
    partitions: 3
"""
)

SCHEMA = river_level(
    {**LEVEL_M, "doc": "metres above the gauge datum"},
    FLOW_M3S,
    {"name": "battery_v", "type": ["null", "float"], "default": None},
    namespace="hub.water",
    doc="One reading of a river gauge.",
)

# information_schema's view of the table that SCHEMA becomes: (column, type, nullable).
COLUMNS = [
    ("device_id", "text", "NO"),
    ("time", "timestamp with time zone", "NO"),
    ("level_m", "double precision", "NO"),
    ("flow_m3s", "double precision", "YES"),
    ("battery_v", "real", "YES"),
    ("received_at", "timestamp with time zone", "YES"),
    ("ingested_at", "timestamp with time zone", "NO"),
]


def run_hub(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def cli_env(settings: HubSettings) -> dict[str, str]:
    """The environment a partner engineer's shell has after `eval "$(hub stack env)"`, reduced to the state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_STATE_DIR"] = str(settings.state_dir)
    return env


@dataclass
class Workspace:
    """A partner's own checkout: connectors/<partner>.yaml and schemas/river_level.avsc."""

    root: Path
    partner: str

    @property
    def config(self) -> Path:
        return self.root / "connectors" / f"{self.partner}.yaml"

    @property
    def schemas(self) -> Path:
        return self.root / "schemas"

    @property
    def table(self) -> tuple[str, str]:
        return (self.partner, "river_levels")

    @property
    def topic(self) -> str:
        return f"hub.{self.partner}.river_levels"

    @property
    def subject(self) -> str:
        return f"{self.topic}-value"

    def write(self, config: str = CONFIG, schema: dict[str, Any] | None = None) -> Workspace:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.schemas.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config.replace("PARTNER", self.partner))
        (self.schemas / "river_level.avsc").write_text(json.dumps(schema or SCHEMA, indent=2))
        return self

    def hub(self, command: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
        return run_hub([command, str(self.config), "--schemas", str(self.schemas), *extra], env)


def workspace(root: Path) -> Workspace:
    return Workspace(root, f"water_{uuid.uuid4().hex[:8]}").write()


def with_field(*fields: dict[str, Any], replace: str | None = None) -> dict[str, Any]:
    """SCHEMA with `fields` appended (or standing in for the field named `replace`)."""
    kept = [f for f in SCHEMA["fields"] if f["name"] != replace]
    return {**SCHEMA, "fields": [*kept, *fields]}


async def snapshot(settings: HubSettings) -> dict[str, Any]:
    """Everything `hub apply` could change: catalog, registry, tables and columns, topics, the broker's accounts."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        queries = {
            "partners": "SELECT id, name, kind, contact, mqtt_password_hash FROM hub.partners ORDER BY id",
            "feeds": "SELECT partner_id, name, config::text, updated_at FROM hub.feeds ORDER BY 1, 2",
            "versions": "SELECT subject, version, schema_id FROM hub.subject_versions ORDER BY 1, 2",
            "schemas": "SELECT id, fingerprint FROM hub.schemas ORDER BY id",
            "columns": """SELECT table_schema, table_name, column_name, data_type, is_nullable
                          FROM information_schema.columns
                          WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                          ORDER BY 1, 2, ordinal_position""",
            "relations": """SELECT n.nspname, c.relname, c.relkind FROM pg_class c
                            JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                            ORDER BY 1, 2""",
        }
        state: dict[str, Any] = {k: [tuple(r) for r in await conn.fetch(q)] for k, q in queries.items()}
    finally:
        await conn.close()
    async with KafkaAdmin(settings, settings.endpoints().kafka_bootstrap) as admin:
        state["topics"] = sorted(await admin.topics())
    state["mqtt_accounts"] = await DynsecBroker.from_settings(settings).accounts()
    return state


async def table_columns(settings: HubSettings, schema: str, table: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        rows = await conn.fetch(
            """SELECT column_name, data_type, is_nullable FROM information_schema.columns
               WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position""",
            schema,
            table,
        )
    finally:
        await conn.close()
    return [(r["column_name"], r["data_type"], r["is_nullable"]) for r in rows]


def feeds_json(env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    result = run_hub(["feeds", "--json"], env)
    assert result.returncode == 0, result.stderr
    return {(f["partner"], f["feed"]): f for f in json.loads(result.stdout)}


@dataclass
class Onboarded:
    ws: Workspace
    env: dict[str, str]
    plan: subprocess.CompletedProcess[str]
    apply: subprocess.CompletedProcess[str]
    before_plan: dict[str, Any]
    after_plan: dict[str, Any]


@pytest.fixture(scope="module")
def water(stack_settings: HubSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Onboarded]:
    """A new partner onboarded the way its engineer would: `hub plan`, then `hub apply --save-credentials`."""
    import asyncio

    ws = workspace(tmp_path_factory.mktemp("water"))
    env = cli_env(stack_settings)
    before = asyncio.run(snapshot(stack_settings))
    plan = ws.hub("plan", env)
    after = asyncio.run(snapshot(stack_settings))
    creds = stack_settings.state_dir / "credentials"  # where tests.integration.support.Device looks
    applied = ws.hub("apply", env, "--save-credentials", str(creds))
    assert applied.returncode == 0, applied.stderr
    yield Onboarded(ws, env, plan, applied, before, after)


# --------------------------------------------------------------------------- plan


def test_plan_lists_every_resource_a_new_partner_gets(water: Onboarded) -> None:
    assert water.plan.returncode == 0, water.plan.stderr
    p = water.ws.partner
    lines = water.plan.stdout.splitlines()
    for expected in (
        f"+ partner     {p}",
        f"+ feed        {p}.river_levels",
        f"+ schema      {water.ws.subject}",
        f"+ topic       {water.ws.topic}  (3 partitions)",
        f"+ table       {p}.river_levels",
        f"+ mqtt-role   partner-{p}  (",
        f"+ mqtt-group  partner-{p}",
        f"+ mqtt-login  {p}  (bound to client id {p}; new password, shown once)",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_plan_changes_nothing(water: Onboarded) -> None:
    assert water.before_plan == water.after_plan


def test_plan_of_the_applied_examples_finds_no_changes(applied: HubSettings) -> None:
    result = run_hub(["plan", str(REPO / "connectors")], cli_env(applied))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "no changes: the catalog and the database already match these files"
    assert all(line.startswith(("mapping ", "  ")) for line in lines[1:])  # each feed's payload -> column mapping


# --------------------------------------------------------------------------- apply


def test_apply_shows_the_credentials_once_and_saves_them_owner_only(water: Onboarded) -> None:
    p = water.ws.partner
    saved_file = Path(water.env["HUB_STATE_DIR"]) / "credentials" / f"{p}.json"
    saved = json.loads(saved_file.read_text())
    assert saved["username"] == p and saved["publish_under"] == f"partners/{p}/"
    assert saved["error_reports"] == f"hub/errors/{p}/#"
    assert f"password {saved['password']}" in water.apply.stdout
    assert saved_file.stat().st_mode & 0o777 == 0o600


async def test_apply_records_the_partner_and_registers_the_schema(
    water: Onboarded, stack_settings: HubSettings
) -> None:
    conn = await asyncpg.connect(stack_settings.endpoints().database_url)
    try:
        partner = await conn.fetchrow("SELECT * FROM hub.partners WHERE id = $1", water.ws.partner)
        versions = await conn.fetch("SELECT version FROM hub.subject_versions WHERE subject = $1", water.ws.subject)
    finally:
        await conn.close()
    assert partner is not None
    assert (partner["name"], partner["kind"], partner["mqtt_username"]) == (
        "Riverton Water Utility",
        "city",
        water.ws.partner,
    )
    assert partner["mqtt_password_hash"].startswith("$7$")  # only Mosquitto's hash is stored
    assert [v["version"] for v in versions] == [1]


def test_feeds_json_describes_the_new_feed(water: Onboarded) -> None:
    feed = feeds_json(water.env)[(water.ws.partner, "river_levels")]
    assert feed["table"] == f"{water.ws.partner}.river_levels"
    assert feed["kafka_topic"] == water.ws.topic
    assert feed["mqtt_topic"] == f"partners/{water.ws.partner}/rivers/+/level"
    assert isinstance(feed["schema_id"], int) and feed["schema_version"] == 1
    assert feed["rows_landed"] == 0
    assert (feed["format"], feed["licence"]) == ("json", "CC-BY-4.0")


def test_apply_creates_the_topic_with_the_configured_partitions(water: Onboarded, stack_settings: HubSettings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": stack_settings.endpoints().kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[water.ws.topic].partitions) == 3
    assert stack_settings.kafka_dead_letter_topic in topics


async def test_apply_creates_a_table_with_columns_from_the_schema_and_a_rollup(
    water: Onboarded, stack_settings: HubSettings
) -> None:
    assert await table_columns(stack_settings, *water.ws.table) == COLUMNS
    conn = await asyncpg.connect(stack_settings.endpoints().database_url)
    try:
        rollup = await conn.fetchval(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            water.ws.partner,
            "river_levels_rollup",
        )
        rollup_columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                water.ws.partner,
                "river_levels_rollup",
            )
        }
    finally:
        await conn.close()
    assert rollup == "VIEW"
    assert {"bucket", "device_id", "samples", "avg_level_m", "max_flow_m3s", "min_battery_v"} <= rollup_columns


async def test_the_new_credentials_publish_only_into_the_partners_namespace(
    water: Onboarded, stack_settings: HubSettings
) -> None:
    p = water.ws.partner
    listener = hub_listener(stack_settings, f"partners/{p}/#")
    device = Device(stack_settings, p)
    try:
        assert device.connect_reason == "Success"
        own_topic = f"partners/{p}/rivers/{unique('gauge')}/level"
        inside = device.publish(own_topic, json.dumps({"lvl": 1.2}))
        outside = device.publish("partners/city_transport/traffic/spoofed", json.dumps({"count": 1}))
        acks = await device.wait_acks(2)
        received = await listener.wait_for(1)
    finally:
        device.close()
        listener.close()
    assert acks[inside] == "Success"
    assert acks[outside] == "Not authorized"  # PUBACK reason 135 for an MQTT v5 client
    assert [topic for topic, _payload in received] == [own_topic]


def test_a_wrong_password_cannot_connect(water: Onboarded, stack_settings: HubSettings) -> None:
    device = Device(stack_settings, water.ws.partner, password="not-the-password")
    try:
        assert device.connect_reason in ("Not authorized", "Bad user name or password")
    finally:
        device.close()


async def test_apply_again_is_a_no_op(water: Onboarded, stack_settings: HubSettings) -> None:
    before = await snapshot(stack_settings)
    again = water.ws.hub("apply", water.env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "no changes: the catalog and the database already match these files"
    assert "password" not in again.stdout
    assert await snapshot(stack_settings) == before


# --------------------------------------------------------------------------- schema changes


async def test_a_compatible_schema_change_adds_the_column(tmp_path: Path, stack_settings: HubSettings) -> None:
    env = cli_env(stack_settings)
    ws = workspace(tmp_path)
    assert ws.hub("apply", env).returncode == 0
    ws.write(schema=with_field({"name": "water_temp_c", "type": ["null", "double"], "default": None}))

    plan = ws.hub("plan", env)
    applied = ws.hub("apply", env)

    assert plan.returncode == 0, plan.stderr
    assert f"+ column      {ws.partner}.river_levels.water_temp_c  (double precision)" in plan.stdout
    assert applied.returncode == 0, applied.stderr
    assert f"+ schema      {ws.subject}  (version 2" in applied.stdout
    columns = await table_columns(stack_settings, *ws.table)
    assert ("water_temp_c", "double precision", "YES") in columns
    assert feeds_json(env)[(ws.partner, "river_levels")]["schema_version"] == 2
    assert ws.hub("apply", env).stdout.strip().startswith("no changes")


INCOMPATIBLE = {
    "a required field without a default": (
        with_field({"name": "gauge_owner", "type": "string"}),
        ["field 'gauge_owner' was added without a default", "BACKWARD"],
    ),
    "a changed field type": (
        with_field({"name": "level_m", "type": "string"}, replace="level_m"),
        ["field 'level_m' changed type from double (version 1) to string", "BACKWARD"],
    ),
    "a changed key field": (
        {
            **SCHEMA,
            "fields": [
                SCHEMA["fields"][0],
                {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                *SCHEMA["fields"][2:],
            ],
        },
        ["field 'time' changed type", "may never change"],
    ),
}


@pytest.mark.parametrize("change", list(INCOMPATIBLE))
async def test_an_incompatible_schema_change_is_refused_and_changes_nothing(
    change: str, water: Onboarded, tmp_path: Path, stack_settings: HubSettings
) -> None:
    schema, says = INCOMPATIBLE[change]
    ws = Workspace(tmp_path, water.ws.partner).write(schema=schema)
    before = await snapshot(stack_settings)

    result = ws.hub("apply", water.env)

    assert result.returncode == 1
    assert "incompatible schema change, nothing was applied" in result.stderr
    assert str(ws.config) in result.stderr and "feed river_levels" in result.stderr
    for fragment in says:
        assert fragment in result.stderr
    assert await snapshot(stack_settings) == before
    assert await table_columns(stack_settings, *ws.table) == COLUMNS


# --------------------------------------------------------------------------- bad input


BAD_INPUT: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "invalid YAML": (
        lambda c: c.replace("  kind: city", "  kind: [city"),
        ["invalid YAML"],
    ),
    "a misspelt key": (
        lambda c: c.replace("    licence: CC-BY-4.0", "    licnce: CC-BY-4.0"),
        [":11 [feeds[0].licnce]", "unknown key 'licnce', did you mean 'licence'?"],
    ),
    "an unknown schema": (
        lambda c: c.replace("schema: river_level", "schema: river_levle"),
        [":12 [feeds[0].schema]", "unknown schema 'river_levle'"],
    ),
    "a topic climbing out of the namespace": (
        lambda c: c.replace("topic: rivers/{device_id}/level", "topic: ../city_transport/{device_id}"),
        [":13 [feeds[0].topic]", "outside the partner's namespace"],
    ),
    "a wildcard topic": (
        lambda c: c.replace("topic: rivers/{device_id}/level", "topic: rivers/#"),
        [":13 [feeds[0].topic]", "wildcards"],
    ),
    "an unsafe identifier": (
        lambda c: c.replace("- name: river_levels", '- name: "Robert\'); DROP TABLE hub.partners;--"'),
        [":9 [feeds[0].name]", "is not a safe identifier"],
    ),
    "duplicate feed names": (
        lambda c: c + c[c.index("  - name: river_levels") :].replace("rivers/", "lakes/"),
        [":25 [feeds[1].name]", "'river_levels' is used twice"],
    ),
    "one bad feed among good ones": (
        lambda c: (
            c
            + c[c.index("  - name: river_levels") :]
            .replace("river_levels", "lake_levels")
            .replace("rivers/", "lakes/")
            .replace("lvl", "lvl\n      depth_m: depth")
        ),
        ["[feeds[1].fields.depth_m]", "has no field 'depth_m'"],
    ),
}


@pytest.mark.parametrize("mistake", list(BAD_INPUT))
async def test_bad_input_is_rejected_with_its_place_and_changes_nothing(
    mistake: str, tmp_path: Path, stack_settings: HubSettings
) -> None:
    edit, says = BAD_INPUT[mistake]
    ws = Workspace(tmp_path, f"water_{uuid.uuid4().hex[:8]}").write(edit(CONFIG))
    before = await snapshot(stack_settings)

    result = ws.hub("apply", cli_env(stack_settings))

    assert result.returncode == 1, result.stdout
    error = result.stderr.strip()
    assert error.startswith(f"error: {ws.config}"), error
    for fragment in says:
        assert fragment in error
    assert "Traceback" not in error
    assert await snapshot(stack_settings) == before


# --------------------------------------------------------------------------- TimescaleDB mode


async def on_timescale(url: str, *statements: str) -> list[Any]:
    """Run statements on their own connection (the WASM engine serves one client at a time): each's first value."""
    conn = await asyncpg.connect(url)
    try:
        return [await conn.fetchval(stmt) for stmt in statements]
    finally:
        await conn.close()


@pytest.mark.timescale
async def test_in_timescaledb_mode_a_feed_is_a_hypertable_that_follows_a_compatible_change(
    timescale_url: str, tmp_path: Path, spare_stack: HubSettings
) -> None:
    ep = spare_stack.endpoints()
    # The catalog and tables in TimescaleDB; topics and MQTT logins on a stack of their own (`spare_stack`).
    settings = HubSettings(
        state_dir=tmp_path / "state",
        database_url=timescale_url,
        mqtt_url=ep.mqtt_url,
        kafka_bootstrap=ep.kafka_bootstrap,
        share_database_grants=False,  # the WASM engine cannot GRANT/REVOKE on a database
    )
    ws = workspace(tmp_path)
    table = f'"{ws.partner}".river_levels'

    first = await apply(settings, ws.config, ws.schemas, broker=LocalBrokerAuth(settings))

    assert [c.detail for c in first.plan.of_kind("table")] == [
        "hypertable, compression, retention, continuous aggregate"
    ]
    hypertables, jobs, _, compressed = await on_timescale(
        timescale_url,
        f"SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = '{ws.partner}'",
        f"""SELECT array_agg(proc_name::text ORDER BY proc_name) FROM timescaledb_information.jobs
            WHERE hypertable_schema = '{ws.partner}'""",
        f"""INSERT INTO {table} (device_id, time, level_m)
            SELECT 'gauge-1', now() - i * interval '1 hour', i FROM generate_series(1, 100) i""",
        f"SELECT count(compress_chunk(c)) FROM show_chunks('{table}', older_than => interval '2 days') c",
    )
    assert hypertables == 1
    assert jobs == ["policy_compression", "policy_refresh_continuous_aggregate", "policy_retention"]
    assert compressed > 0

    ws.write(schema=with_field({"name": "water_temp_c", "type": ["null", "double"], "default": None}))
    second = await apply(settings, ws.config, ws.schemas, broker=LocalBrokerAuth(settings))

    assert ("column", "create", f"{ws.partner}.river_levels.water_temp_c") in [
        (c.kind, c.action, c.target) for c in second.plan.changes
    ]
    *_, hottest = await on_timescale(
        timescale_url,
        f"INSERT INTO {table} (device_id, time, level_m, water_temp_c) VALUES ('gauge-1', now(), 1.5, 11.5)",
        f"CALL refresh_continuous_aggregate('\"{ws.partner}\".river_levels_rollup', NULL, NULL)",
        f'SELECT max(max_water_temp_c) FROM "{ws.partner}".river_levels_rollup',
    )
    assert hottest == 11.5
    assert (await apply(settings, ws.config, ws.schemas, broker=LocalBrokerAuth(settings))).plan.empty
