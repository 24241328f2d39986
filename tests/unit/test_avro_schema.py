"""Feed schemas: parsing rules, the Avro -> SQL column mapping and compatibility between versions."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.errors import SchemaError
from hub.schema.avro import (
    Column,
    FeedSchema,
    avro_to_columns,
    load_feed_schema,
    parse_feed_schema,
)
from hub.schema.compatibility import Compatibility, check_compatibility
from tests.feeds import DEVICE_ID, TIME_MS

SOURCE = "schemas/air.avsc"
TIME = TIME_MS


def record(*fields: dict[str, Any], name: str = "air", keys: bool = True) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [*((DEVICE_ID, TIME) if keys else ()), *fields]}


def feed(*fields: dict[str, Any], name: str = "air", keys: bool = True) -> FeedSchema:
    return parse_feed_schema(json.dumps(record(*fields, name=name, keys=keys)), SOURCE)


def schema_error(schema: Any) -> str:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    with pytest.raises(SchemaError) as info:
        parse_feed_schema(text, SOURCE)
    return str(info.value)


# --------------------------------------------------------------------------- a valid schema


def test_a_valid_schema_parses_into_fields_columns_and_a_fastavro_schema() -> None:
    schema = feed(
        {"name": "count", "type": "int", "doc": "vehicles"},
        {"name": "speed", "type": ["null", "double"], "default": None},
    )

    assert schema.name == "air"
    assert schema.fields == ("device_id", "time", "count", "speed")
    assert schema.columns == (
        Column("device_id", "text", nullable=False, numeric=False),
        Column("time", "timestamptz", nullable=False, numeric=False),
        Column("count", "integer", nullable=False, numeric=True),
        Column("speed", "double precision", nullable=True, numeric=True),
    )
    out = io.BytesIO()
    row = {"device_id": "d1", "time": 1_700_000_000_000, "count": 3, "speed": None}
    fastavro.schemaless_writer(out, schema.parsed, row)
    out.seek(0)
    decoded: Any = fastavro.schemaless_reader(out, schema.parsed, None)
    assert decoded["count"] == 3


def test_every_avro_type_maps_to_its_sql_column_type() -> None:
    columns = avro_to_columns(
        record(
            {"name": "s", "type": "string"},
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "b", "type": "boolean"},
            {"name": "raw", "type": "bytes"},
            {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 6}},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["CAR", "BUS"]}},
            {"name": "seen", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "extra", "type": {"type": "map", "values": "double"}},
            {"name": "pos", "type": {"type": "record", "name": "Pos", "fields": [{"name": "lat", "type": "double"}]}},
            {"name": "maybe_text", "type": ["null", "string"], "default": None},
            {"name": "text_or_null", "type": ["string", "null"]},
            {"name": "either", "type": ["int", "string"]},
            {"name": "either_or_null", "type": ["null", "int", "string"]},
        )
    )

    assert [(c.name, c.sql_type, c.nullable, c.numeric) for c in columns] == [
        ("device_id", "text", False, False),
        ("time", "timestamptz", False, False),
        ("s", "text", False, False),
        ("i", "integer", False, True),
        ("l", "bigint", False, True),
        ("f", "real", False, True),
        ("d", "double precision", False, True),
        ("b", "boolean", False, False),
        ("raw", "bytea", False, False),
        ("mac", "bytea", False, False),
        ("kind", "text", False, False),
        ("seen", "timestamptz", False, False),
        ("day", "date", False, False),
        ("price", "numeric(10,2)", False, True),
        ("tags", "jsonb", False, False),
        ("extra", "jsonb", False, False),
        ("pos", "jsonb", False, False),
        ("maybe_text", "text", True, False),
        ("text_or_null", "text", True, False),
        ("either", "jsonb", True, False),
        ("either_or_null", "jsonb", True, False),
    ]


def test_a_named_type_used_twice_maps_both_fields() -> None:
    schema = feed(
        {"name": "home", "type": {"type": "record", "name": "Pos", "fields": [{"name": "lat", "type": "double"}]}},
        {"name": "away", "type": "Pos"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A"]}},
        {"name": "kind_before", "type": ["null", "Kind"], "default": None},
    )

    assert [(c.name, c.sql_type, c.nullable) for c in schema.columns[2:]] == [
        ("home", "jsonb", False),
        ("away", "jsonb", False),
        ("kind", "text", False),
        ("kind_before", "text", True),
    ]


def test_device_id_and_time_columns_come_first_even_when_declared_later() -> None:
    schema = parse_feed_schema(
        json.dumps(record({"name": "count", "type": "int"}, TIME, DEVICE_ID, keys=False)),
        SOURCE,
    )

    assert schema.fields == ("count", "time", "device_id")
    assert [c.name for c in schema.columns] == ["time", "device_id", "count"]


def test_the_canonical_text_keeps_docs_defaults_and_logical_types_and_ignores_layout() -> None:
    schema = record({"name": "speed", "type": ["null", "double"], "default": None, "doc": "km/h"})
    compact = parse_feed_schema(json.dumps(schema), SOURCE)
    pretty = parse_feed_schema(json.dumps(schema, indent=4, sort_keys=True), "elsewhere/air.avsc")

    assert compact.canonical == pretty.canonical
    assert json.loads(compact.canonical) == schema
    assert '"doc":"km/h"' in compact.canonical
    assert '"logicalType":"timestamp-millis"' in compact.canonical
    assert " " not in compact.canonical


def test_load_feed_schema_names_the_feed_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "traffic_count.avsc"
    path.write_text(json.dumps(record(name="traffic")), encoding="utf-8")

    schema = load_feed_schema(path)

    assert schema.name == "traffic_count"
    assert schema.fields == ("device_id", "time")


def test_a_source_that_is_not_a_file_name_is_kept_as_the_name() -> None:
    schema = parse_feed_schema(json.dumps(record()), "city_transport.traffic-value v2")

    assert schema.name == "city_transport.traffic-value v2"


def test_load_feed_schema_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.avsc"

    with pytest.raises(SchemaError, match=r"absent\.avsc: file not found"):
        load_feed_schema(path)


def test_load_feed_schema_errors_start_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "air.avsc"
    path.write_text(json.dumps(record({"name": "Temp", "type": "double"})), encoding="utf-8")

    with pytest.raises(SchemaError) as info:
        load_feed_schema(path)

    assert str(info.value).startswith(f"{path}: field 'Temp'")


# --------------------------------------------------------------------------- rule violations


def test_invalid_json_names_the_file_line_and_column() -> None:
    message = schema_error('{\n  "type": "record",\n  "name": "air"\n  "fields": []\n}')

    assert message.startswith(f"{SOURCE}: invalid JSON at line 4, column 3")


def test_an_invalid_avro_schema_is_reported_with_the_parser_reason() -> None:
    message = schema_error(record({"name": "count", "type": "integer"}))

    assert message.startswith(f"{SOURCE}: field 'count' is not valid Avro: ")
    assert "integer" in message


def test_an_invalid_record_header_is_reported_without_a_field() -> None:
    message = schema_error({**record({"name": "count", "type": "int"}), "name": 7})

    assert message.startswith(f"{SOURCE}: not a valid Avro schema: ")


def test_a_default_that_does_not_match_its_type_is_an_invalid_schema() -> None:
    message = schema_error(record({"name": "count", "type": "int", "default": "many"}))

    assert message.startswith(f"{SOURCE}: field 'count' is not valid Avro: ")
    assert "many" in message


@pytest.mark.parametrize("schema", ["string", ["null", "string"], {"type": "enum", "name": "e", "symbols": ["A"]}])
def test_the_top_level_type_must_be_a_record(schema: Any) -> None:
    message = schema_error(json.dumps(schema))

    assert message.startswith(f'{SOURCE}: the top-level type must be "record"')


@pytest.mark.parametrize(
    ("schema", "field", "rule"),
    [
        (record({"name": "x", "type": "int"}, keys=False), "device_id", "is missing"),
        (record(TIME, {"name": "device_id", "type": "int"}, keys=False), "device_id", "must be a plain string"),
        (
            record(TIME, {"name": "device_id", "type": ["null", "string"]}, keys=False),
            "device_id",
            "must be a plain string (not nullable",
        ),
        (
            record(TIME, {"name": "device_id", "type": {"type": "string", "logicalType": "uuid"}}, keys=False),
            "device_id",
            "no logicalType",
        ),
        (
            record(DEVICE_ID, keys=False),
            "time",
            "must be a long with logicalType timestamp-millis or timestamp-micros",
        ),
        (
            record(DEVICE_ID, {"name": "time", "type": "long"}, keys=False),
            "time",
            "must be a long with logicalType timestamp-millis or timestamp-micros",
        ),
        (
            record(DEVICE_ID, {"name": "time", "type": {"type": "int", "logicalType": "timestamp-millis"}}, keys=False),
            "time",
            "must be a long with logicalType timestamp-millis or timestamp-micros",
        ),
        (
            record(
                DEVICE_ID,
                {"name": "time", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
                keys=False,
            ),
            "time",
            "(not nullable)",
        ),
        (
            record(DEVICE_ID, {"name": "time", "type": "string"}, keys=False),
            "time",
            "must be a long with logicalType timestamp-millis or timestamp-micros",
        ),
        (record({"name": "Temp", "type": "double"}), "Temp", "is not a valid column name"),
        (record({"name": "_temp", "type": "double"}), "_temp", "is not a valid column name"),
        (record({"name": "t" * 64, "type": "double"}), "t" * 64, "is not a valid column name"),
        (record({"name": "received_at", "type": "long"}), "received_at", "is reserved"),
        (record({"name": "ingested_at", "type": "long"}), "ingested_at", "is reserved"),
        (record({"name": "nothing", "type": "null"}), "nothing", "carries no data"),
        (
            record({"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 6}}),
            "price",
            "scale must be less than or equal to the precision",
        ),
        (
            record({"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 0}}),
            "price",
            "precision must be a whole number",
        ),
    ],
)
def test_each_rule_violation_names_the_file_the_field_and_the_rule(schema: Any, field: str, rule: str) -> None:
    message = schema_error(schema)

    assert message.startswith(f"{SOURCE}: field '{field}'")
    assert rule in message


def test_the_time_rule_reads_as_documented() -> None:
    message = schema_error(record(DEVICE_ID, {"name": "time", "type": "long"}, keys=False))

    assert message.startswith(
        "schemas/air.avsc: field 'time' must be a long with logicalType timestamp-millis or timestamp-micros"
    )


def test_a_63_character_field_name_is_a_valid_column() -> None:
    schema = feed({"name": "t" * 63, "type": "double"})

    assert schema.columns[-1].name == "t" * 63


# --------------------------------------------------------------------------- compatibility

SPEED = {"name": "speed", "type": "double"}


def test_the_first_version_has_nothing_to_be_compatible_with() -> None:
    assert check_compatibility(feed(SPEED), [], "FULL_TRANSITIVE") == []


def test_backward_accepts_adding_an_optional_field_with_a_default() -> None:
    v1 = feed(SPEED)
    v2 = feed(SPEED, {"name": "pm25", "type": ["null", "double"], "default": None})

    assert check_compatibility(v2, [v1], "BACKWARD") == []


def test_backward_rejects_adding_a_required_field_without_a_default_and_names_it() -> None:
    v1 = feed(SPEED)
    v2 = feed(SPEED, {"name": "pm25", "type": "double"})

    problems = check_compatibility(v2, [v1], "BACKWARD")

    assert len(problems) == 1
    assert problems[0].startswith("BACKWARD: field 'pm25' was added without a default")
    assert "version 1" in problems[0]


def test_backward_rejects_changing_a_type_and_names_the_field_and_both_types() -> None:
    v1 = feed({"name": "label", "type": "string"})
    v2 = feed({"name": "label", "type": "int"})

    problems = check_compatibility(v2, [v1], "BACKWARD")

    assert len(problems) == 1
    assert problems[0].startswith("BACKWARD: field 'label' changed type from string (version 1) to int")


def test_backward_accepts_a_promotion_avro_allows() -> None:
    v1 = feed({"name": "count", "type": "int"})
    v2 = feed({"name": "count", "type": "long"})

    assert check_compatibility(v2, [v1], "BACKWARD") == []
    assert check_compatibility(v2, [v1], "FORWARD") != []


def test_making_a_nullable_field_required_is_blamed_on_that_field() -> None:
    # Avro's checker loses the location below a union; the problem must still name the field.
    v1 = feed(SPEED, {"name": "note", "type": ["null", "string"], "default": None})
    v2 = feed(SPEED, {"name": "note", "type": "string"})

    problems = check_compatibility(v2, [v1], "BACKWARD")

    assert len(problems) == 1
    assert problems[0].startswith("BACKWARD: field 'note' changed type from [null, string] (version 1) to string")


def test_a_change_inside_a_nested_record_names_the_nested_path() -> None:
    pos_v1 = {"type": "record", "name": "Pos", "fields": [{"name": "lat", "type": "double"}]}
    pos_v2 = {"type": "record", "name": "Pos", "fields": [{"name": "lat", "type": "string"}]}

    v1, v2 = feed({"name": "pos", "type": pos_v1}), feed({"name": "pos", "type": pos_v2})

    problems = check_compatibility(v2, [v1], "FULL")

    assert problems
    assert all("field 'pos'" in p and "'pos.lat'" in p and "version 1" in p for p in problems)


def test_a_named_type_used_by_two_fields_is_checked_for_each_field() -> None:
    # The checker memoises by schema object, so one whole-record run reports only the first field.
    pos_v1 = {"type": "record", "name": "Pos", "fields": [{"name": "lat", "type": "double"}]}
    pos_v2 = {"type": "record", "name": "Pos", "fields": [{"name": "lat", "type": "string"}]}
    v1 = feed({"name": "home", "type": pos_v1}, {"name": "away", "type": "Pos"})
    v2 = feed({"name": "home", "type": pos_v2}, {"name": "away", "type": "Pos"})

    problems = check_compatibility(v2, [v1], "BACKWARD")

    assert [p.split("'")[1] for p in problems] == ["home", "away"]


def test_removing_an_enum_symbol_is_rejected_for_old_data() -> None:
    v1 = feed({"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["CAR", "BUS"]}})
    v2 = feed({"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["CAR"]}})

    problems = check_compatibility(v2, [v1], "BACKWARD")

    assert len(problems) == 1
    assert problems[0].startswith("BACKWARD: field 'kind' changed type")
    assert "BUS" in problems[0]


def test_renaming_the_record_is_rejected_unless_aliased() -> None:
    v1 = feed(SPEED, name="air")
    renamed = feed(SPEED, name="air_quality")
    aliased = parse_feed_schema(json.dumps({**record(SPEED, name="air_quality"), "aliases": ["air"]}), SOURCE)

    problems = check_compatibility(renamed, [v1], "BACKWARD")

    assert len(problems) == 1
    assert "renamed from 'air' to 'air_quality'" in problems[0]
    assert check_compatibility(aliased, [v1], "BACKWARD") == []


def test_forward_rejects_removing_a_field_without_a_default() -> None:
    v1 = feed(SPEED, {"name": "pm25", "type": "double"})
    v2 = feed(SPEED)

    problems = check_compatibility(v2, [v1], "FORWARD")

    assert len(problems) == 1
    assert problems[0].startswith("FORWARD: field 'pm25' was removed, but version 1 declares it without a default")
    assert check_compatibility(v2, [v1], "BACKWARD") == []


def test_forward_accepts_removing_a_field_that_had_a_default() -> None:
    v1 = feed(SPEED, {"name": "pm25", "type": ["null", "double"], "default": None})
    v2 = feed(SPEED)

    assert check_compatibility(v2, [v1], "FORWARD") == []


def test_full_needs_both_directions() -> None:
    v1 = feed(SPEED)
    added_required = feed(SPEED, {"name": "pm25", "type": "double"})
    added_optional = feed(SPEED, {"name": "pm25", "type": ["null", "double"], "default": None})

    assert check_compatibility(added_required, [v1], "FORWARD") == []
    assert [p.split(":")[0] for p in check_compatibility(added_required, [v1], "FULL")] == ["FULL"]
    assert check_compatibility(added_optional, [v1], "FULL") == []


def test_backward_transitive_checks_every_previous_version_and_backward_only_the_latest() -> None:
    v1 = feed({"name": "level", "type": "int"})
    v2 = feed()  # 'level' dropped: v2 reads v1 data by ignoring it
    v3 = feed({"name": "level", "type": "string", "default": "unknown"})  # v1 wrote 'level' as int

    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    problems = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert len(problems) == 1
    assert problems[0].startswith("BACKWARD_TRANSITIVE: field 'level' changed type from int (version 1) to string")


def test_forward_transitive_checks_every_previous_version_and_forward_only_the_latest() -> None:
    v1 = feed(SPEED, {"name": "pm25", "type": "double"})
    v2 = feed(SPEED, {"name": "pm25", "type": "double", "default": 0.0})
    v3 = feed(SPEED)

    assert check_compatibility(v3, [v1, v2], "FORWARD") == []
    problems = check_compatibility(v3, [v1, v2], "FORWARD_TRANSITIVE")
    assert len(problems) == 1
    assert "field 'pm25'" in problems[0]
    assert "version 1" in problems[0]
    assert check_compatibility(v3, [v1, v2], "FULL") == []
    assert len(check_compatibility(v3, [v1, v2], "FULL_TRANSITIVE")) == 1


def test_none_accepts_anything_but_a_key_field_change() -> None:
    v1 = feed({"name": "label", "type": "string"})
    v2 = feed({"name": "label", "type": "int"}, {"name": "pm25", "type": "double"})

    assert check_compatibility(v2, [v1], "NONE") == []


def test_changing_the_time_unit_is_rejected_in_every_mode() -> None:
    # Avro ignores logical types when checking, so this would otherwise pass.
    v1 = feed(SPEED)
    micros = {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}}
    v2 = parse_feed_schema(json.dumps(record(DEVICE_ID, micros, SPEED, keys=False)), SOURCE)

    for mode in Compatibility:
        problems = check_compatibility(v2, [v1], mode)
        assert len(problems) == 1, mode
        assert problems[0].startswith(
            "field 'time' changed type from long (timestamp-millis) (version 1) to long (timestamp-micros)"
        )


def test_modes_are_accepted_as_the_connector_enum_or_any_case_text() -> None:
    v1 = feed(SPEED)
    v2 = feed(SPEED, {"name": "pm25", "type": "double"})

    assert check_compatibility(v2, [v1], Compatibility.BACKWARD) == check_compatibility(v2, [v1], "backward")


def test_an_unknown_mode_is_an_error() -> None:
    with pytest.raises(SchemaError, match="unknown compatibility mode 'SIDEWAYS'"):
        check_compatibility(feed(), [feed()], "SIDEWAYS")


# --------------------------------------------------------------------------- robustness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
type_names = st.sampled_from(
    ["null", "boolean", "int", "long", "float", "double", "bytes", "string", "record", "enum", "array", "map",
     "fixed", "error", "Pos", "nope", "time", "device_id"]
)  # fmt: skip
avro_types = st.recursive(
    type_names | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.fixed_dictionaries(
            {"type": children},
            optional={
                "name": st.sampled_from(["Pos", "air", "x.y", "1bad"]),
                "logicalType": st.sampled_from(
                    ["timestamp-millis", "timestamp-micros", "date", "decimal", "uuid", "x"]
                ),
                "precision": json_values,
                "scale": json_values,
                "items": children,
                "values": children,
                "symbols": st.lists(st.sampled_from(["A", "B", "c d"]), max_size=3),
                "size": json_values,
                "fields": st.lists(st.fixed_dictionaries({"name": json_values, "type": children}), max_size=3),
            },
        )
    ),
    max_leaves=12,
)
field_names = st.sampled_from(["device_id", "time", "speed", "Temp", "received_at", ""]) | json_values
schema_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["record", "error", "enum"]) | type_names},
    optional={
        "name": st.sampled_from(["air", "Pos", ""]) | json_values,
        "fields": st.lists(
            st.fixed_dictionaries(
                {"name": field_names, "type": avro_types}, optional={"default": json_values, "doc": json_values}
            ),
            max_size=5,
        )
        | json_values,
        "aliases": json_values,
    },
)

# Well-formed-looking field types, so that many feed-shaped schemas get past the Avro parsers.
named_leaves = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["int", "long", "bytes", "string", "fixed", "enum"]),
        "name": st.sampled_from(["F1", "F2"]),
    },
    optional={
        "logicalType": st.sampled_from(["timestamp-millis", "timestamp-micros", "date", "decimal", "uuid", "x"]),
        "precision": st.integers(-2, 1200),
        "scale": st.integers(-2, 20),
        "size": st.integers(0, 20),
        "symbols": st.lists(st.sampled_from(["A", "B"]), min_size=1, max_size=2, unique=True),
    },
)
field_types = st.recursive(
    st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes", "string", "F1", "R1"])
    | named_leaves,
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.fixed_dictionaries({"type": st.just("array"), "items": children})
        | st.fixed_dictionaries({"type": st.just("map"), "values": children})
        | st.fixed_dictionaries(
            {
                "type": st.just("record"),
                "name": st.sampled_from(["R1", "R2"]),
                "fields": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["x", "y"]), "type": children})),
            }
        )
    ),
    max_leaves=8,
)
feed_like = st.builds(
    lambda fields: record(*fields),
    st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "b", "pm25", "Bad", "received_at"]), "type": field_types},
            optional={"default": json_values},
        ),
        max_size=4,
    ),
)


def parse_or_schema_error(text: str) -> FeedSchema | None:
    try:
        return parse_feed_schema(text, SOURCE)
    except SchemaError as exc:
        assert str(exc).startswith(f"{SOURCE}: ")
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_any_text_is_either_a_schema_or_a_schema_error(text: str) -> None:
    parse_or_schema_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_is_either_a_schema_or_a_schema_error(value: Any) -> None:
    parse_or_schema_error(json.dumps(value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_like)
def test_any_schema_shaped_json_is_either_a_schema_or_a_schema_error(value: Any) -> None:
    parse_or_schema_error(json.dumps(value))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed_like)
def test_any_feed_shaped_json_is_a_schema_with_one_column_per_field_or_a_schema_error(value: Any) -> None:
    schema = parse_or_schema_error(json.dumps(value))

    if schema is not None:
        assert sorted(c.name for c in schema.columns) == sorted(schema.fields)
        assert schema.columns[:2] == (
            Column("device_id", "text", nullable=False, numeric=False),
            Column("time", "timestamptz", nullable=False, numeric=False),
        )
        assert check_compatibility(schema, [schema], "FULL_TRANSITIVE") == []


@pytest.mark.parametrize(
    "text",
    ["", "[" * 100_000, "1" * 5000, '{"type": "record", "name": "a", "fields": [' + "[" * 5000 + "]" * 5000 + "]}"],
)
def test_pathological_text_is_a_schema_error(text: str) -> None:
    with pytest.raises(SchemaError):
        parse_feed_schema(text, SOURCE)


def test_parsed_raw_drops_top_level_timestamp_types_only_and_reads_them_as_longs() -> None:
    text = json.dumps(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "device_id", "type": "string"},
                {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "seen", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {"name": "any", "type": ["null", "string", {"type": "long", "logicalType": "timestamp-millis"}]},
                {
                    "name": "list",
                    "type": {"type": "array", "items": {"type": "long", "logicalType": "timestamp-millis"}},
                },
            ],
        }
    )
    schema = parse_feed_schema(text, "r.avsc")
    assert schema.parsed_raw is schema.parsed_raw  # cached
    assert schema.time_units == {"time": 1000, "seen": 1_000_000}
    rec = {"device_id": "d", "time": 1_795_427_940_123, "seen": 7, "day": 3, "any": 5, "list": [9]}
    logical, raw = io.BytesIO(), io.BytesIO()
    fastavro.schemaless_writer(logical, schema.parsed, rec)
    fastavro.schemaless_writer(raw, schema.parsed_raw, rec)
    assert raw.getvalue() == logical.getvalue()
    back = fastavro.schemaless_reader(io.BytesIO(raw.getvalue()), schema.parsed_raw, None)
    assert isinstance(back, dict)
    assert (back["time"], back["seen"]) == (1_795_427_940_123, 7)
    assert not isinstance(back["day"], int)  # date kept
    assert not isinstance(back["any"], int)  # a jsonb union keeps its types
    assert not isinstance(back["list"][0], int)  # nested types kept
