"""Kafka records to table rows (hub.landing.rows), without servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.landing.rows import FeedRows, RowBuilder
from hub.landing.staging import land_from_staging_sql, staging_name, staging_sql
from hub.landing.writer import TableBatch
from hub.schema.avro import FeedSchema, parse_feed_schema
from hub.schema.wire import WireEncoder
from tests.unit.kafka_records import RECEIVED_MS, consumer_record

TIME_MS = 1_795_427_940_123  # 2026-11-23T09:59:00.123Z


def schema(version: int) -> FeedSchema:
    fields: list[dict[str, Any]] = [
        {"name": "device_id", "type": "string"},
        {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ppm", "type": "double"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ]
    if version >= 2:
        fields += [
            {"name": "temperature_c", "type": ["null", "double"], "default": None},
            {"name": "sensor", "type": "string", "default": "ndir"},
        ]
    text = json.dumps({"type": "record", "name": "Reading", "namespace": "hub.test", "fields": fields})
    return parse_feed_schema(text, f"reading v{version}")


V1, V2 = schema(1), schema(2)
IDS = {1: V1, 2: V2}


def record(value: bytes | None, offset: int = 0, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return consumer_record(value, offset, partition=3, key=b"dev-1", headers=headers)


def v1(ppm: float = 410.0) -> bytes:
    return WireEncoder(1, V1.parsed).encode({"device_id": "dev-1", "time": TIME_MS, "ppm": ppm, "tags": ["a"]})


def v2(ppm: float = 420.0) -> bytes:
    fields = {"device_id": "dev-1", "time": TIME_MS, "ppm": ppm, "tags": [], "temperature_c": 21.5, "sensor": "pas"}
    return WireEncoder(2, V2.parsed).encode(fields)


def build(*values: bytes | None, current: FeedSchema = V2, columns: list[str] | None = None) -> FeedRows:
    builder = RowBuilder(current, IDS.get, columns)
    return builder.build([record(v, offset=i) for i, v in enumerate(values)])


def as_dicts(rows: FeedRows) -> list[dict[str, Any]]:
    return [dict(zip(rows.columns, r, strict=True)) for r in rows.rows]


def test_a_record_of_the_older_version_fills_the_new_columns_with_null_or_the_schema_default() -> None:
    rows = build(v1())
    assert as_dicts(rows) == [
        {
            "device_id": "dev-1",
            "time": TIME_MS * 1000,  # microseconds since the epoch, for the timestamptz codec
            "ppm": 410.0,
            "tags": '["a"]',
            "temperature_c": None,
            "sensor": "ndir",
            "received_at": datetime.fromtimestamp(RECEIVED_MS / 1000, UTC),
        }
    ]


def test_a_record_of_the_current_version_fills_every_column() -> None:
    [row] = as_dicts(build(v2()))
    assert (row["ppm"], row["tags"], row["temperature_c"], row["sensor"]) == (420.0, "[]", 21.5, "pas")


def test_both_versions_in_one_batch_keep_their_order_and_their_sources() -> None:
    rows = build(v1(1.0), v2(2.0), v1(3.0))
    assert [r[2] for r in rows.rows] == [1.0, 2.0, 3.0]
    assert [s.offset for s in rows.sources] == [0, 1, 2]


def test_only_the_columns_the_table_has_are_filled() -> None:
    rows = build(v2(), columns=["device_id", "time", "ppm", "tags"])
    assert rows.columns == ["device_id", "time", "ppm", "tags", "received_at"]
    assert rows.rows[0][:3] == ("dev-1", TIME_MS * 1000, 420.0)


def test_a_record_with_a_schema_id_the_registry_lacks_is_rejected_as_unknown_schema() -> None:
    unknown = WireEncoder(99, V2.parsed).encode(
        {"device_id": "d", "time": TIME_MS, "ppm": 1.0, "tags": [], "temperature_c": None, "sensor": "x"}
    )
    rows = build(unknown)
    assert rows.rows == []
    [r] = rows.rejected
    assert (r.reason, r.topic, r.partition, r.offset, r.key, r.value) == (
        "unknown_schema",
        "hub.p.readings",
        3,
        0,
        b"dev-1",
        unknown,
    )
    assert "99" in r.message


def test_a_value_that_is_not_the_wire_format_or_not_its_schema_is_rejected_as_not_decodable() -> None:
    rows = build(b"", None, b"\x01\x00\x00\x00\x01abc", v2()[:-3])
    assert rows.rows == []
    assert [r.reason for r in rows.rejected] == ["not_decodable"] * 4


def test_a_missing_or_garbled_received_header_leaves_received_at_empty_and_the_row_stands() -> None:
    builder = RowBuilder(V2, IDS.get)
    rows = builder.build([record(v2(), headers=[]), record(v2(), headers=[("received_ms", b"soon")])])
    assert [r[-1] for r in rows.rows] == [None, None]
    assert rows.rejected == []


def test_a_schema_id_learnt_later_is_looked_up_again() -> None:
    known: dict[int, FeedSchema] = {}
    builder = RowBuilder(V2, known.get)
    assert [r.reason for r in builder.build([record(v1())]).rejected] == ["unknown_schema"]
    known[1] = V1
    assert len(builder.build([record(v1())]).rows) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_raise_and_each_record_is_a_row_or_a_rejection(values: list[bytes]) -> None:
    wire = [b"\x00\x00\x00\x00\x02" + v for v in values[: len(values) // 2]] + values[len(values) // 2 :]
    rows = build(*wire)
    assert len(rows.rows) + len(rows.rejected) == len(wire)
    assert len(rows.sources) == len(rows.rows)


def test_a_schema_change_or_a_retyped_column_gets_a_staging_table_of_its_own() -> None:
    def batch(columns: list[str], signature: str = "") -> TableBatch:
        return TableBatch("p", "f", "p", "readings", FeedRows(columns=columns), signature)

    names = {
        staging_name(batch(["device_id", "time", "ppm"])),
        staging_name(batch(["device_id", "time", "ppm", "sensor"])),
        staging_name(batch(["device_id", "time", "ppm"], "ppm real")),
        staging_name(batch(["device_id", "time", "ppm"], "ppm double precision")),
    }
    assert len(names) == 4
    assert all(len(n) <= 63 for n in names)


def test_the_staged_insert_takes_no_constraints_and_compares_every_record_it_skips_but_received_at() -> None:
    create = staging_sql('"p"."readings"', '"device_id", "time"', "_stage_x")
    assert "LIKE" not in create and "WITH NO DATA" in create and "ON COMMIT DELETE ROWS" in create
    assert '"hub#seq"' in create, "each record's place in its batch"
    stmt = land_from_staging_sql('"p"."readings"', ["device_id", "time", "ppm", "received_at"], "_stage_x")
    assert 'ON CONFLICT ("device_id", "time") DO NOTHING' in stmt
    assert "IS DISTINCT FROM" in stmt and "'ppm'" in stmt
    assert "'received_at'" not in stmt, "a redelivery has a new received_at: not a different reading"
    one = land_from_staging_sql('"p"."readings"', ["device_id", "time", "ppm"], "_stage_x", one=True)
    assert '"hub#seq" = $1' in one


def test_timestamps_come_out_as_epoch_microseconds_and_out_of_range_ones_are_refused() -> None:
    text = json.dumps(
        {
            "type": "record",
            "name": "T",
            "fields": [
                {"name": "device_id", "type": "string"},
                {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {
                    "name": "seen",
                    "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
                    "default": None,
                },
            ],
        }
    )
    current = parse_feed_schema(text, "t")
    encoder = WireEncoder(7, current.parsed)
    ok = encoder.encode({"device_id": "d", "time": 5, "seen": 2})
    unset = encoder.encode({"device_id": "d", "time": -5, "seen": None})
    too_late = encoder.encode({"device_id": "d", "time": 1, "seen": 253_402_300_800_000})
    rows = RowBuilder(current, {7: current}.get).build(
        [record(v, offset=i) for i, v in enumerate([ok, unset, too_late])]
    )
    assert [r[:3] for r in rows.rows] == [("d", 5, 2000), ("d", -5, None)]
    assert [(r.offset, r.reason) for r in rows.rejected] == [(2, "out_of_range")]
