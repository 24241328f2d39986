"""make_plan: the desired state diffed against what the catalog, the broker and the database already hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.catalog.store import FeedRow, TableColumn
from hub.connector.loader import parse_connector
from hub.control.plan import CurrentState, DesiredPartner, Plan, desired_feed, make_plan
from hub.control.tables import HUB_COLUMNS, pg_type
from hub.errors import ConfigError, SchemaError
from hub.schema.avro import parse_feed_schema
from hub.settings import HubSettings
from tests.feeds import LEVEL_M, RIVERTON_PARTNER, river_level

SETTINGS = HubSettings(state_dir=Path("/nonexistent"))
FILE = "connectors/riverton_water.yaml"
SUBJECT = "hub.riverton_water.river_levels-value"
TABLE = "riverton_water.river_levels"

CONFIG = (
    RIVERTON_PARTNER.format(partner="riverton_water")
    + """\
feeds:
  - name: river_levels
    description: Water level at river gauges.
    licence: CC-BY-4.0
    schema: river_level
    topic: rivers/{device_id}/level
    time: {field: ts, format: epoch_s}
"""
)

LEVEL = LEVEL_M
GAUGE: dict[str, Any] = {"name": "gauge_name", "type": "string"}


def schema(*fields: dict[str, Any]) -> dict[str, Any]:
    return river_level(*fields)


def desired(config: str = CONFIG, avro: dict[str, Any] | None = None) -> list[DesiredPartner]:
    cfg = parse_connector(config, FILE)
    feed_schema = parse_feed_schema(json.dumps(avro or schema(LEVEL, GAUGE)), "schemas/river_level.avsc")
    feeds = tuple(desired_feed(SETTINGS, cfg.partner.id, f, feed_schema, FILE, i) for i, f in enumerate(cfg.feeds))
    return [DesiredPartner(cfg, FILE, feeds)]


def applied(partners: list[DesiredPartner]) -> CurrentState:
    """The state right after applying `partners`: what read_current would find."""
    state = CurrentState()
    for p in partners:
        c = p.config.partner
        state.partners[c.id] = {"name": c.name, "kind": str(c.kind), "contact": c.contact}
        for f in p.feeds:
            state.feeds[(f.partner_id, f.feed.name)] = FeedRow(
                partner_id=f.partner_id,
                name=f.feed.name,
                schema_name=f.schema.name,
                subject=f.subject,
                compatibility=str(f.feed.compatibility),
                mqtt_filter=f.mqtt_filter,
                kafka_topic=f.kafka_topic,
                partitions=f.partitions,
                table_schema=f.table.schema,
                table_name=f.table.table,
                description=f.feed.description,
                licence=f.feed.licence,
                config=json.loads(json.dumps(f.feed.model_dump(mode="json", by_alias=True))),
                schema_id=1,
                schema_version=1,
                schema_text=f.schema.canonical,
            )
            state.history[f.subject] = [f.schema.canonical]
            columns = {c.name: TableColumn(pg_type(c.sql_type), c.nullable) for c in f.table.columns}
            columns["received_at"] = TableColumn("timestamp with time zone", True)
            columns["ingested_at"] = TableColumn("timestamp with time zone", False)
            state.tables[(f.table.schema, f.table.table)] = columns
            state.topics.add(f.kafka_topic)
    return state


def kinds(plan: Plan) -> list[tuple[str, str, str]]:
    return [(c.kind, c.action, c.target) for c in plan.changes]


def table_sql(plan: Plan) -> list[str]:
    return [stmt for c in plan.changes if c.kind == "table" for stmt in c.sql]


def plan_after(avro: dict[str, Any], config: str = CONFIG, *, timescale: bool = False) -> Plan:
    """The plan for `avro` (and `config`) once the first version (level_m, gauge_name) is applied."""
    return make_plan(desired(config, avro), applied(desired()), timescale)


def refusal(avro: dict[str, Any], config: str = CONFIG, *, timescale: bool = False) -> str:
    with pytest.raises(SchemaError) as info:
        plan_after(avro, config, timescale=timescale)
    return str(info.value)


# --------------------------------------------------------------------------- new and unchanged


def test_a_new_partner_gets_every_resource_but_its_broker_accounts_which_the_broker_comparison_plans() -> None:
    plan = make_plan(desired(), CurrentState(), timescale=False)
    assert kinds(plan) == [
        ("partner", "create", "riverton_water"),
        ("feed", "create", "riverton_water.river_levels"),
        ("schema", "create", SUBJECT),
        ("topic", "create", "hub.riverton_water.river_levels"),
        ("table", "create", TABLE),
    ]
    create = table_sql(plan)
    assert any('CREATE TABLE IF NOT EXISTS "riverton_water"."river_levels"' in s for s in create)
    assert any('"level_m" double precision NOT NULL' in s for s in create)
    assert any("CREATE OR REPLACE VIEW" in s and "river_levels_rollup" in s for s in create)


def test_a_new_feed_in_timescale_mode_is_a_hypertable_with_policies_and_a_continuous_aggregate() -> None:
    sql = "\n".join(table_sql(make_plan(desired(), CurrentState(), timescale=True)))
    for fragment in ("create_hypertable", "add_compression_policy", "add_retention_policy", "timescaledb.continuous"):
        assert fragment in sql


def test_the_plan_renders_one_line_per_change() -> None:
    lines = make_plan(desired(), CurrentState(), timescale=False).render()
    assert lines[0].startswith("+ partner") and "city, Riverton Water Utility" in lines[0]
    assert any(line.startswith("+ topic") and "4 partitions" in line for line in lines)


def test_applying_the_same_configs_again_plans_no_changes() -> None:
    plan = make_plan(desired(), applied(desired()), timescale=False)
    assert plan.empty
    assert plan.render() == ["no changes: the catalog and the database already match these files"]


def test_a_topic_lost_by_the_broker_is_planned_again() -> None:
    current = applied(desired())
    current.topics.clear()
    assert kinds(make_plan(desired(), current, timescale=False)) == [
        ("topic", "create", "hub.riverton_water.river_levels")
    ]


def test_changed_partner_details_and_feed_settings_are_updates_naming_what_changed() -> None:
    config = CONFIG.replace("contact: telemetry@", "contact: data@").replace(
        "description: Water level at river gauges.", "description: River levels."
    )
    plan = make_plan(desired(config), applied(desired()), timescale=False)
    assert kinds(plan) == [("partner", "update", "riverton_water"), ("feed", "update", "riverton_water.river_levels")]
    assert plan.changes[1].detail == "changed: description"


def test_a_feed_removed_from_the_config_is_kept_and_noted() -> None:
    current = applied(desired())
    config = CONFIG.replace("river_levels", "river_flows").replace("rivers/{device_id}", "flows/{device_id}")
    plan = make_plan(desired(config), current, timescale=False)
    assert ("feed", "create", "riverton_water.river_flows") in kinds(plan)
    assert any("river_levels are no longer in" in n and "kept" in n for n in plan.notes)


# --------------------------------------------------------------------------- compatible schema changes


def test_an_optional_field_adds_a_nullable_column_and_rebuilds_the_rollup() -> None:
    plan = plan_after(schema(LEVEL, GAUGE, {"name": "flow_m3s", "type": ["null", "double"], "default": None}))
    assert kinds(plan) == [
        ("schema", "create", SUBJECT),
        ("column", "create", f"{TABLE}.flow_m3s"),
        ("table", "update", TABLE),
    ]
    assert plan.changes[0].detail == "version 2 from schemas/river_level.avsc"
    sql = table_sql(plan)
    assert sql[0] == 'DROP VIEW IF EXISTS "riverton_water"."river_levels_rollup"'
    assert 'ALTER TABLE "riverton_water"."river_levels" ADD COLUMN IF NOT EXISTS "flow_m3s" double precision' in sql
    assert "avg_flow_m3s" in sql[-1]


def test_a_text_field_adds_a_column_without_touching_the_rollup() -> None:
    plan = plan_after(schema(LEVEL, GAUGE, {"name": "river", "type": "string", "default": "unknown"}))
    assert table_sql(plan) == ['ALTER TABLE "riverton_water"."river_levels" ADD COLUMN IF NOT EXISTS "river" text']


def test_a_field_made_optional_lets_its_column_be_null() -> None:
    plan = plan_after(schema(LEVEL, {"name": "gauge_name", "type": ["null", "string"], "default": None}))
    assert ("column", "update", f"{TABLE}.gauge_name") in kinds(plan)
    assert table_sql(plan) == ['ALTER TABLE "riverton_water"."river_levels" ALTER COLUMN "gauge_name" DROP NOT NULL']


def test_a_field_dropped_under_forward_compatibility_lets_its_column_be_null() -> None:
    config = CONFIG.replace("    schema: river_level", "    schema: river_level\n    compatibility: FORWARD")
    current = applied(desired(config, schema(LEVEL, {**GAUGE, "default": "unnamed"})))
    plan = make_plan(desired(config, schema(LEVEL)), current, timescale=False)
    assert ("column", "update", f"{TABLE}.gauge_name") in kinds(plan)
    assert table_sql(plan) == ['ALTER TABLE "riverton_water"."river_levels" ALTER COLUMN "gauge_name" DROP NOT NULL']


def test_an_int_widened_to_long_widens_the_column_in_plain_postgresql() -> None:
    current = applied(desired(avro=schema({"name": "level_mm", "type": "int"})))
    plan = make_plan(desired(avro=schema({"name": "level_mm", "type": "long"})), current, timescale=False)
    assert ("column", "update", f"{TABLE}.level_mm") in kinds(plan)
    sql = table_sql(plan)
    assert 'ALTER TABLE "riverton_water"."river_levels" ALTER COLUMN "level_mm" TYPE bigint' in sql
    assert sql[0].startswith("DROP VIEW")  # the rollup reads the column: rebuilt around the change


def test_a_widened_column_is_refused_in_timescale_mode_naming_the_column() -> None:
    current = applied(desired(avro=schema({"name": "level_mm", "type": "int"})))
    with pytest.raises(SchemaError) as info:
        make_plan(desired(avro=schema({"name": "level_mm", "type": "long"})), current, timescale=True)
    message = str(info.value)
    assert f"column {TABLE}.level_mm from integer to bigint" in message
    assert "compressed hypertable" in message


def test_a_changed_rollup_interval_rebuilds_the_rollup() -> None:
    config = CONFIG.replace("    schema: river_level", "    schema: river_level\n    rollup: 1h")
    sql = table_sql(make_plan(desired(config), applied(desired()), timescale=False))
    assert sql[0].startswith("DROP VIEW") and "'3600 seconds'::interval" in sql[1]


def test_changed_retention_replaces_the_timescale_policy() -> None:
    config = CONFIG.replace("    schema: river_level", "    schema: river_level\n    retention: 30d")
    sql = table_sql(make_plan(desired(config), applied(desired()), timescale=True))
    assert sql == [
        """SELECT remove_retention_policy('"riverton_water"."river_levels"', if_exists => true)""",
        """SELECT add_retention_policy('"riverton_water"."river_levels"', '2592000 seconds'::interval)""",
    ]


# --------------------------------------------------------------------------- refused changes


def test_a_required_field_without_a_default_is_refused_naming_the_field_and_the_rule() -> None:
    message = refusal(schema(LEVEL, GAUGE, {"name": "flow_m3s", "type": "double"}))
    assert message.startswith("incompatible schema change, nothing was applied:")
    assert FILE in message and "feed river_levels" in message
    assert "BACKWARD: field 'flow_m3s' was added without a default" in message


def test_a_changed_field_type_is_refused_naming_both_types() -> None:
    message = refusal(schema({"name": "level_m", "type": "string"}, GAUGE))
    assert "field 'level_m' changed type from double (version 1) to string" in message


def test_a_key_field_may_never_change_type() -> None:
    avro = schema(LEVEL, GAUGE)
    avro["fields"][1] = {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}}
    message = refusal(avro)
    assert "field 'time' changed type" in message and "may never change" in message


def test_a_type_change_the_table_cannot_follow_is_refused_even_without_compatibility_checks() -> None:
    config = CONFIG.replace("    schema: river_level", "    schema: river_level\n    compatibility: NONE")
    current = applied(desired(config))
    with pytest.raises(SchemaError) as info:
        make_plan(desired(config, schema({"name": "level_m", "type": "string"}, GAUGE)), current, timescale=False)
    assert f"column {TABLE}.level_m from double precision to text" in str(info.value)


def test_every_feeds_problems_are_reported_together() -> None:
    config = CONFIG + CONFIG[CONFIG.index("  - name: river_levels") :].replace("river_levels", "lake_levels").replace(
        "rivers/", "lakes/"
    )
    current = applied(desired(config))
    with pytest.raises(SchemaError) as info:
        make_plan(desired(config, schema(LEVEL, GAUGE, {"name": "x", "type": "int"})), current, timescale=False)
    assert "feed river_levels" in str(info.value) and "feed lake_levels" in str(info.value)


def test_changing_a_feeds_partitions_is_refused_naming_the_key() -> None:
    config = CONFIG.replace("    schema: river_level", "    schema: river_level\n    partitions: 4")
    current = applied(desired(config))
    changed = config.replace("partitions: 4", "partitions: 8")
    with pytest.raises(ConfigError) as info:
        make_plan(desired(changed), current, timescale=False)
    assert info.value.field == "feeds[0].partitions"
    assert "has 4, the config asks for 8" in info.value.reason


def test_the_hub_columns_are_not_part_of_the_schema_diff() -> None:
    assert {name for name, _ in HUB_COLUMNS} == {"received_at", "ingested_at"}
    assert make_plan(desired(), applied(desired()), timescale=True).empty
