"""Connector configs: every mistake a partner can make is reported with the file, line and key path, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.connector.loader import load_connector, parse_connector
from hub.connector.model import ConnectorConfig, FieldMapping
from hub.control.desired import load_desired
from hub.errors import ConfigError, SchemaError
from hub.settings import HubSettings
from tests.feeds import FLOW_M3S, LEVEL_M, RIVERTON_PARTNER, river_level

REPO = Path(__file__).resolve().parents[2]
FILE = "connectors/riverton_water.yaml"

CONFIG = (
    "# Riverton Water: river gauges.\n"
    + RIVERTON_PARTNER.format(partner="riverton_water")
    + """
feeds:
  - name: river_levels
    description: Water level at river gauges, every 5 minutes.
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
    partitions: 2

  - name: rain_gauges
    description: Rainfall per 15 minutes at the utility's rain gauges.
    licence: CC-BY-4.0
    schema: river_level
    topic: rain/{device_id}
"""
)

RIVER_LEVEL = river_level(LEVEL_M, FLOW_M3S, namespace="hub.riverton_water")


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing `fragment`."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return hits[occurrence - 1]


def rejected(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_connector(text, FILE)
    return info.value


# --------------------------------------------------------------------------- valid configs


@pytest.mark.parametrize("name", ["city_transport", "uni_air_lab", "voltcharge"])
def test_every_example_partner_config_is_valid(name: str) -> None:
    config = load_connector(REPO / "connectors" / f"{name}.yaml")
    assert config.partner.id == name
    assert config.feeds


def test_a_field_mapping_may_be_a_name_or_a_unit_conversion() -> None:
    config = parse_connector(CONFIG, FILE)
    feed = config.feeds[0]
    assert feed.mapping("level_m") == FieldMapping(source="lvl")
    assert feed.mapping("flow_m3s") == FieldMapping(source="flow_lps", scale=0.001)
    assert feed.mapping("device_id") == FieldMapping(source="device_id")  # unmapped: the schema's own name
    assert feed.subscription("partners/riverton_water") == "partners/riverton_water/rivers/+/level"


def test_the_stored_config_reads_back_to_the_same_feed() -> None:
    feed = parse_connector(CONFIG, FILE).feeds[0]
    stored = json.loads(json.dumps(feed.model_dump(mode="json", by_alias=True)))
    assert ConnectorConfig.model_validate({"partner": parse_connector(CONFIG, FILE).partner, "feeds": [stored]})


# --------------------------------------------------------------------------- YAML


def test_invalid_yaml_names_the_file_and_line() -> None:
    text = CONFIG.replace("  kind: city", "  kind: [city")
    error = rejected(text)
    assert error.file == FILE
    assert error.line is not None and line_of(text, "kind: [city") <= error.line <= line_of(text, "contact:")
    assert str(error).startswith(f"{FILE}:{error.line}: invalid YAML")


def test_a_tab_indent_is_invalid_yaml_on_its_line() -> None:
    text = CONFIG.replace("  kind: city", "\tkind: city")
    error = rejected(text)
    assert error.line == line_of(text, "\tkind: city")
    assert "invalid YAML" in error.reason


def test_a_key_given_twice_is_an_error_on_the_second_line() -> None:
    text = CONFIG.replace("  kind: city\n", "  kind: city\n  kind: private\n")
    error = rejected(text)
    assert error.line == line_of(text, "kind: private")
    assert error.field == "partner.kind"
    assert f"first on line {line_of(text, 'kind: city')}" in error.reason


@pytest.mark.parametrize("text", ["", "just text", "- a\n- b\n"])
def test_a_config_that_is_not_a_mapping_is_rejected(text: str) -> None:
    error = rejected(text)
    assert "mapping with `partner:` and `feeds:`" in error.reason


# --------------------------------------------------------------------------- keys


def test_a_misspelt_key_is_named_with_its_line_and_the_key_it_was_meant_to_be() -> None:
    text = CONFIG.replace("    licence: CC-BY-4.0", "    licnce: CC-BY-4.0", 1)
    error = rejected(text)
    assert error.line == line_of(text, "licnce:")
    assert error.field == "feeds[0].licnce"
    assert error.reason.startswith("unknown key 'licnce', did you mean 'licence'?")
    assert "more problem" not in error.reason  # the "missing licence" it causes is the same problem


def test_a_misspelt_nested_key_names_its_full_path() -> None:
    text = CONFIG.replace("        scale: 0.001", "        scael: 0.001")
    error = rejected(text)
    assert error.line == line_of(text, "scael:")
    assert error.field == "feeds[0].fields.flow_m3s.scael"
    assert "did you mean 'scale'?" in error.reason


def test_an_unknown_key_without_a_close_match_points_to_the_reference() -> None:
    text = CONFIG.replace("    partitions: 2", "    colour: blue")
    error = rejected(text)
    assert error.field == "feeds[0].colour"
    assert "did you mean" not in error.reason
    assert "docs/connector-config.md" in error.reason


def test_a_missing_required_key_is_named() -> None:
    text = CONFIG.replace("    description: Rainfall per 15 minutes at the utility's rain gauges.\n", "")
    error = rejected(text)
    assert error.field == "feeds[1].description"
    assert error.reason == "required key 'description' is missing"
    assert error.line == line_of(text, "- name: rain_gauges")


def test_a_field_mapping_that_is_neither_a_name_nor_a_conversion_is_rejected() -> None:
    text = CONFIG.replace("      level_m: lvl", "      level_m: 5")
    error = rejected(text)
    assert (error.field, error.line) == ("feeds[0].fields.level_m", line_of(text, "level_m: 5"))
    assert "write the payload field's name, or {source, scale, offset}" in error.reason


@pytest.mark.parametrize(
    ("old", "new", "field", "says"),
    [
        ("retention: 400d", "retention: 400 days", "feeds[0].retention", "is not a duration"),
        ("format: epoch_s", "format: epoch_seconds", "feeds[0].time.format", "is not a time format"),
        ("format: epoch_s", "format: 1000", "feeds[0].time.format", "1000 is not a time format"),
        ("format: json", "format: xml", "feeds[0].format", "'json', 'avro' or 'csv'"),
        ("kind: city", "kind: charity", "partner.kind", "'city', 'university' or 'private'"),
        ("partitions: 2", "partitions: 0", "feeds[0].partitions", "greater than or equal to 1"),
        ("format: json", "format: csv", "feeds[0]", "list the columns under csv.columns"),
    ],
)
def test_a_wrong_value_names_its_key_and_the_rule(old: str, new: str, field: str, says: str) -> None:
    text = CONFIG.replace(old, new, 1)
    error = rejected(text)
    assert error.field == field
    assert says in error.reason
    # A rule about one key points at it; a rule about the feed as a whole points at the feed.
    assert error.line == (line_of(text, "- name: river_levels") if field == "feeds[0]" else line_of(text, new))


def test_a_wrong_kind_of_value_names_the_key_not_pydantics_internals() -> None:
    text = CONFIG.replace("    partitions: 2", "    csv: 5")
    error = rejected(text)
    assert (error.field, error.line) == ("feeds[0].csv", line_of(text, "csv: 5"))


def test_an_unknown_time_zone_is_rejected() -> None:
    text = CONFIG.replace("      format: epoch_s", "      format: epoch_s\n      timezone: Mars/Olympus_Mons")
    error = rejected(text)
    assert (error.field, error.line) == ("feeds[0].time.timezone", line_of(text, "timezone:"))
    assert "IANA" in error.reason


# --------------------------------------------------------------------------- names and topics


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("- name: river_levels", '- name: "Robert\'); DROP TABLE students;--"', "feeds[0].name"),
        ("  id: riverton_water", "  id: Riverton-Water", "partner.id"),
        ("  id: riverton_water", "  id: pg_water", "partner.id"),
        ("    schema: river_level", "    schema: ../../etc/passwd", "feeds[0].schema"),
    ],
)
def test_a_name_that_is_not_a_safe_identifier_is_rejected(old: str, new: str, field: str) -> None:
    text = CONFIG.replace(old, new, 1)
    error = rejected(text)
    assert error.field == field
    assert error.line == line_of(text, new.strip().removeprefix("- "))
    assert "safe identifier" in error.reason or "reserved" in error.reason


@pytest.mark.parametrize(
    "topic",
    ["../x/{device_id}", "'#'", "rivers/+/level", "/rivers/{device_id}", "rivers/{device_id}/", "$SYS/{device_id}"],
)
def test_a_topic_outside_the_partners_namespace_is_rejected(topic: str) -> None:
    text = CONFIG.replace("topic: rivers/{device_id}/level", f"topic: {topic}")
    error = rejected(text)
    assert error.field == "feeds[0].topic"
    assert error.line == line_of(text, f"topic: {topic}")
    assert "namespace" in error.reason


def test_the_device_id_placeholder_is_needed_when_the_id_comes_from_the_topic() -> None:
    text = CONFIG.replace("topic: rain/{device_id}", "topic: rain/all")
    error = rejected(text)
    assert error.field == "feeds[1]"
    assert "has no {device_id} level" in error.reason


def test_duplicate_feed_names_point_at_the_second_one() -> None:
    text = CONFIG.replace("- name: rain_gauges", "- name: river_levels")
    error = rejected(text)
    assert error.field == "feeds[1].name"
    assert error.line == line_of(text, "- name: river_levels", occurrence=2)
    assert "'river_levels' is used twice (also by feeds[0])" in error.reason


def test_feeds_whose_topics_could_match_the_same_message_are_rejected() -> None:
    text = CONFIG.replace(
        "topic: rain/{device_id}", "topic: rivers/gauge7/level\n    device_id: {source: field, field: gauge}"
    )
    error = rejected(text)
    assert error.field == "feeds[1].topic"
    assert error.line == line_of(text, "topic: rivers/gauge7/level")
    assert "overlaps the topic of feed 'river_levels'" in error.reason


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("a/{device_id}", "a/x"),
        ("a/x", "a/{device_id}"),
        ("{device_id}/zz/b", "a/{device_id}/b"),
        ("a/b/c", "a/b/d"),  # no overlap
    ],
)
def test_topic_overlap_is_found_among_many_feeds_whatever_their_order(earlier: str, later: str) -> None:
    topics = [f"t{i}/{{device_id}}" for i in range(50)] + [earlier, later]
    feeds = "".join(
        f"  - {{name: f{i}, description: d, licence: CC-BY-4.0, schema: river_level, topic: '{t}', format: json,"
        " device_id: {source: field, field: id}, time: {field: ts, format: epoch_s}}\n"
        for i, t in enumerate(topics)
    )
    text = RIVERTON_PARTNER.format(partner="many") + "feeds:\n" + feeds
    if later == "a/b/d":
        assert len(parse_connector(text, FILE).feeds) == 52
        return
    error = rejected(text)
    assert error.field == "feeds[51].topic"
    assert "overlaps the topic of feed 'f50'" in error.reason


def test_only_the_first_problem_is_detailed_and_the_rest_are_counted() -> None:
    text = CONFIG.replace("kind: city", "kind: charity").replace("retention: 400d", "retention: forever")
    error = rejected(text)
    assert error.field == "partner.kind"
    assert error.reason.endswith("(and 1 more problem)")


# --------------------------------------------------------------------------- against the schemas


def write(tmp_path: Path, config: str, schema: dict[str, Any] | None = None) -> tuple[Path, Path]:
    connectors, schemas = tmp_path / "connectors", tmp_path / "schemas"
    connectors.mkdir(exist_ok=True)
    schemas.mkdir(exist_ok=True)
    (schemas / "river_level.avsc").write_text(json.dumps(schema or RIVER_LEVEL))
    path = connectors / "riverton_water.yaml"
    path.write_text(config)
    return path, schemas


def settings(tmp_path: Path) -> HubSettings:
    return HubSettings(state_dir=tmp_path / "state")


def desired_error(tmp_path: Path, config: str) -> ConfigError:
    path, schemas = write(tmp_path, config)
    with pytest.raises(ConfigError) as info:
        load_desired(path, settings(tmp_path), schemas)
    return info.value


def test_a_valid_config_and_its_schema_become_the_desired_state(tmp_path: Path) -> None:
    path, schemas = write(tmp_path, CONFIG)
    [partner] = load_desired(path, settings(tmp_path), schemas)
    river = partner.feeds[0]
    assert river.kafka_topic == "hub.riverton_water.river_levels"
    assert river.subject == "hub.riverton_water.river_levels-value"
    assert river.mqtt_filter == "partners/riverton_water/rivers/+/level"
    assert river.partitions == 2
    assert [c.name for c in river.table.columns] == ["device_id", "time", "level_m", "flow_m3s"]
    assert partner.feeds[1].partitions == HubSettings().kafka_partitions


def test_an_unknown_schema_names_the_feed_key_and_the_missing_file(tmp_path: Path) -> None:
    text = CONFIG.replace("    schema: river_level\n    topic: rain", "    schema: rainfall\n    topic: rain")
    error = desired_error(tmp_path, text)
    assert error.file is not None and error.file.endswith("riverton_water.yaml")
    assert error.field == "feeds[1].schema"
    assert error.line == line_of(text, "schema: rainfall")
    assert "unknown schema 'rainfall'" in error.reason and "rainfall.avsc" in error.reason


def test_a_mapping_for_a_field_the_schema_lacks_lists_the_schemas_fields(tmp_path: Path) -> None:
    text = CONFIG.replace("      level_m: lvl", "      level_cm: lvl")
    error = desired_error(tmp_path, text)
    assert (error.field, error.line) == ("feeds[0].fields.level_cm", line_of(text, "level_cm:"))
    assert "has no field 'level_cm'; its fields are device_id, time, level_m, flow_m3s" in error.reason


def test_the_key_fields_are_not_mapped_under_fields(tmp_path: Path) -> None:
    text = CONFIG.replace("      level_m: lvl", "      level_m: lvl\n      time: ts")
    error = desired_error(tmp_path, text)
    assert error.field == "feeds[0].fields.time"
    assert "set by the `time:` section" in error.reason


def test_a_partner_defined_in_two_files_is_rejected_at_the_second(tmp_path: Path) -> None:
    path, schemas = write(tmp_path, CONFIG)
    (path.parent / "zz_copy.yaml").write_text(CONFIG)
    with pytest.raises(ConfigError) as info:
        load_desired(path.parent, settings(tmp_path), schemas)
    error = info.value
    assert error.file is not None and error.file.endswith("zz_copy.yaml")
    assert (error.field, error.line) == ("partner.id", line_of(CONFIG, "id: riverton_water"))
    assert "already defined in" in error.reason


def test_an_invalid_schema_file_is_named(tmp_path: Path) -> None:
    schema = {**RIVER_LEVEL, "fields": [f for f in RIVER_LEVEL["fields"] if f["name"] != "device_id"]}
    path, schemas = write(tmp_path, CONFIG, schema)
    with pytest.raises(SchemaError) as info:
        load_desired(path, settings(tmp_path), schemas)
    assert "river_level.avsc" in str(info.value) and "'device_id' is missing" in str(info.value)


def test_one_bad_feed_among_good_ones_rejects_the_whole_file(tmp_path: Path) -> None:
    text = (
        CONFIG
        + """
  - name: snow_gauges
    description: Snow depth.
    licence: CC-BY-4.0
    schema: river_level
    topic: snow/all
    format: avro
    device_id: {source: field, field: gauge}
"""
    )
    error = desired_error(tmp_path, text)
    assert (error.field, error.line) == ("feeds[2].device_id.field", line_of(text, "device_id: {source: field"))
    assert "Avro payloads carry the schema's own device id field" in error.reason
