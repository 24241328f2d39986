"""RowBuilder.build's fast paths (hub.landing.rows) against the plain algorithm they replace.

`reference_build` is RowBuilder.build as it was before its per-schema plans: decode_wire, one
fastavro.schemaless_reader call per record, rec.get per column, json.dumps per jsonb value. Every
row, source and rejection the builder makes must be the one this makes.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastavro import schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import PayloadError
from hub.landing import rows as rows_module
from hub.landing.rows import FeedRows, RowBuilder
from hub.schema import fast_read
from hub.schema.avro import FeedSchema, parse_feed_schema
from hub.schema.timestamps import MAX_EPOCH_US, MIN_EPOCH_US
from hub.schema.wire import WireEncoder, decode_wire
from tests.unit.kafka_records import RECEIVED_MS, consumer_record

TIME_MS = 1_795_427_940_123

LOCATION = {
    "type": "record",
    "name": "Location",
    "fields": [
        {"name": "lat", "type": "double"},
        {"name": "lon", "type": "double"},
        {"name": "fixed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}


def feed_schema(version: int) -> FeedSchema:
    """Version 1, then 2 with fields added (defaults), a named type used twice, and more jsonb."""
    fields: list[dict[str, Any]] = [
        {"name": "device_id", "type": "string"},
        {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ppm", "type": "double"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "reading", "type": ["null", "long", "string"], "default": None},
        {"name": "seen", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None},
        {"name": "mode", "type": {"type": "enum", "name": "Mode", "symbols": ["AUTO", "MANUAL"]}},
    ]
    if version >= 2:
        fields += [
            {"name": "temperature_c", "type": ["null", "double"], "default": None},
            {"name": "sensor", "type": "string", "default": "ndir"},
            {"name": "home", "type": LOCATION, "default": {"lat": 0.0, "lon": 0.0, "fixed_at": 0}},
            {"name": "last", "type": ["null", "Location"], "default": None},
            {"name": "counts", "type": {"type": "map", "values": "long"}, "default": {}},
            {
                "name": "calibrated",
                "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
                "default": None,
            },
            {
                "name": "price",
                "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}],
                "default": None,
            },
        ]
    text = json.dumps({"type": "record", "name": "Reading", "namespace": "hub.test", "fields": fields})
    return parse_feed_schema(text, f"reading v{version}")


V1, V2 = feed_schema(1), feed_schema(2)
REGISTRY = {1: V1, 2: V2}


def random_record(rnd: random.Random, version: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "device_id": f"dev-{rnd.randrange(50)}",
        "time": TIME_MS + rnd.randrange(-(10**6), 10**6),
        "ppm": rnd.uniform(0, 1000),
        "tags": [rnd.choice("abc") for _ in range(rnd.randrange(3))],
        "reading": rnd.choice([None, rnd.randrange(-1000, 1000), "high"]),
        "seen": rnd.choice([None, TIME_MS - rnd.randrange(10**6)]),
        "mode": rnd.choice(["AUTO", "MANUAL"]),
    }
    if version >= 2:
        location = {"lat": rnd.uniform(-90, 90), "lon": rnd.uniform(-180, 180), "fixed_at": TIME_MS * 1000}
        rec |= {
            "temperature_c": rnd.choice([None, rnd.uniform(-20, 40)]),
            "sensor": rnd.choice(["pas", "ndir", "é"]),
            "home": location,
            "last": rnd.choice([None, location]),
            "counts": {k: rnd.randrange(100) for k in rnd.sample("xyz", rnd.randrange(3))},
            "calibrated": rnd.choice([None, TIME_MS * 1000 + 7]),
            "price": rnd.choice([None, Decimal("12.34"), Decimal("-0.05")]),
        }
    return rec


ENCODERS = {1: WireEncoder(1, V1.parsed), 2: WireEncoder(2, V2.parsed)}
_RND = random.Random(7)
VALID = [ENCODERS[v].encode(random_record(_RND, v)) for v in (1, 2, 2, 1, 2) for _ in range(6)]


def kafka_record(value: bytes | None, offset: int, headers: Any = None) -> Any:
    return consumer_record(
        value,
        offset,
        partition=1,
        headers=(("partner", b"p"), ("received_ms", str(RECEIVED_MS).encode())) if headers is None else headers,
    )


# --------------------------------------------------------------------------- the algorithm before


def reference_build(builder: RowBuilder, records: list[Any]) -> FeedRows:
    out = FeedRows(columns=[*builder.columns, "received_at"])
    jsonb = {c.name for c in builder.current.columns if c.sql_type == "jsonb"}
    for r in records:
        try:
            schema_id, body = decode_wire(r.value or b"")
            found = builder._reader(schema_id)
            if found is None:
                raise PayloadError("unknown_schema", f"schema id {schema_id} is not in the registry")
            writer, reader, times = found
            try:
                rec = schemaless_reader(io.BytesIO(body), writer, reader)
            except Exception as exc:
                raise PayloadError("not_decodable", f"Avro body does not match schema id {schema_id}: {exc}") from exc
            if not isinstance(rec, dict):
                raise PayloadError("not_decodable", f"schema id {schema_id} does not describe a record")
            for name, scale in times:
                value = rec.get(name)
                if value is not None:
                    value *= scale
                    if not MIN_EPOCH_US <= value <= MAX_EPOCH_US:
                        raise ValueError(f"field {name!r}: {value} us since 1970 is outside years 1 to 9999")
                    rec[name] = value
            header = next((v for k, v in r.headers if k == "received_ms"), None)
            values = [json.dumps(rec.get(c), default=str) if c in jsonb else rec.get(c) for c in builder.columns]
            out.rows.append((*values, rows_module._received_at(header)))
            out.sources.append(r)
        except PayloadError as exc:
            out.rejected.append(rows_module.rejected(r, exc.code, str(exc)))
        except (ValueError, OverflowError, OSError) as exc:
            out.rejected.append(rows_module.rejected(r, "out_of_range", f"{type(exc).__name__}: {exc}"))
    return out


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # fastavro's EOF messages name the BytesIO object


def assert_same(got: FeedRows, want: FeedRows) -> None:
    assert got.columns == want.columns
    assert got.rows == want.rows
    assert [type(v) for row in got.rows for v in row] == [type(v) for row in want.rows for v in row]
    assert [s.offset for s in got.sources] == [s.offset for s in want.sources]
    assert [(r.offset, r.reason, _ADDRESS.sub("", r.message), r.value, r.headers) for r in got.rejected] == [
        (r.offset, r.reason, _ADDRESS.sub("", r.message), r.value, r.headers) for r in want.rejected
    ]


def both(records: list[Any], current: FeedSchema = V2, columns: list[str] | None = None) -> FeedRows:
    """The builder's result, after checking that it is the reference's (on a builder of its own)."""
    got = RowBuilder(current, REGISTRY.get, columns).build(records)
    assert_same(got, reference_build(RowBuilder(current, REGISTRY.get, columns), records))
    return got


@pytest.fixture(params=["cython", "schemaless_reader"])
def reader_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs with fastavro's Cython reader called directly, and as without it."""
    if request.param == "schemaless_reader":
        monkeypatch.setattr(fast_read, "_read_data", None)
    elif fast_read._read_data is None:
        pytest.skip("fastavro has no Cython reader here")
    yield request.param


# --------------------------------------------------------------------------- the cases


def test_every_version_and_every_column_type_gives_the_reference_rows(reader_kind: str) -> None:
    rows = both([kafka_record(v, i) for i, v in enumerate(VALID)])
    assert len(rows.rows) == len(VALID) and not rows.rejected
    older = dict(zip(rows.columns, rows.rows[0], strict=True))  # version 1, read through version 2
    assert (older["sensor"], older["temperature_c"], older["last"], older["counts"]) == ("ndir", None, "null", "{}")
    assert older["home"] == '{"lat": 0.0, "lon": 0.0, "fixed_at": 0}'  # a default, as fastavro gives it
    assert isinstance(older["time"], int)
    current = dict(zip(rows.columns, rows.rows[6], strict=True))
    assert current["home"].endswith('"fixed_at": "2026-11-23 09:59:00.123000+00:00"}')  # nested: a datetime


def test_the_older_version_as_the_current_one_gives_the_reference_rows(reader_kind: str) -> None:
    records = [kafka_record(v, i) for i, v in enumerate(VALID) if v[4] == 1]
    rows = both(records, current=V1)
    assert len(rows.rows) == len(records)


@pytest.mark.parametrize(
    "columns",
    [["device_id", "time", "ppm", "sensor", "home"], ["device_id", "tags"], ["time"], ["device_id"]],
)
def test_a_table_with_some_of_the_columns_gives_the_reference_rows(reader_kind: str, columns: list[str]) -> None:
    rows = both([kafka_record(v, i) for i, v in enumerate(VALID)], columns=columns)
    assert rows.columns == [*columns, "received_at"]


def test_received_at_comes_from_the_first_received_ms_header_and_a_bad_one_leaves_it_empty(reader_kind: str) -> None:
    at = datetime.fromtimestamp(RECEIVED_MS / 1000, UTC)
    later = str(RECEIVED_MS + 5).encode()
    headers: list[Any] = [
        (),
        [],
        (("received_ms", b"soon"),),
        (("received_ms", b""),),
        (("received_ms", None),),
        (("received_ms", b"99999999999999999999999"),),
        (("partner", b"p"), ("feed", b"f"), ("device", b"d"), ("received_ms", later), ("mqtt_topic", b"t")),
        (("received_ms", str(RECEIVED_MS).encode()), ("received_ms", later)),
        (("received_ms", str(RECEIVED_MS).encode()),),
        (("received_ms", str(RECEIVED_MS).encode()),),
        (("received_ms", b"soon"),),
        (("received_at", later),),
    ]
    rows = both([kafka_record(VALID[1], i, h) for i, h in enumerate(headers)])
    expected_later = datetime.fromtimestamp((RECEIVED_MS + 5) / 1000, UTC)
    assert [r[-1] for r in rows.rows] == [None] * 6 + [expected_later, at, at, at, None, None]


def test_out_of_range_timestamps_are_refused_as_out_of_range(reader_kind: str) -> None:
    base = random_record(random.Random(1), 2)
    values = [
        ENCODERS[2].encode(base | {"time": 253_402_300_800_000}),  # 10000-01-01
        ENCODERS[2].encode(base | {"seen": -62_135_596_800_001}),  # just before year 1
        ENCODERS[2].encode(base | {"seen": 253_402_300_799_999}),  # the last millisecond of 9999: fine
        ENCODERS[1].encode(random_record(random.Random(1), 1) | {"time": 2**62}),  # older version
        ENCODERS[2].encode(base | {"calibrated": MAX_EPOCH_US}),  # the last microsecond: fine
        ENCODERS[2].encode(base | {"calibrated": MAX_EPOCH_US + 1}),
        ENCODERS[2].encode(base | {"calibrated": MIN_EPOCH_US}),  # the first microsecond: fine
        ENCODERS[2].encode(base | {"calibrated": MIN_EPOCH_US - 1}),
    ]
    rows = both([kafka_record(v, i) for i, v in enumerate(values)])
    assert [r.offset for r in rows.rejected] == [0, 1, 3, 5, 7]
    assert {r.reason for r in rows.rejected} == {"out_of_range"}
    assert [s.offset for s in rows.sources] == [2, 4, 6]


def test_values_that_are_not_the_wire_format_or_not_their_schema_are_refused_as_before(reader_kind: str) -> None:
    good = VALID[6]  # version 2
    values = [
        None,
        b"",
        b"\x00\x00\x00\x02",  # 4 bytes: no room for the schema id
        b"\x00\x00\x00\x00\x02",  # a known id, no body
        b"\x01" + good[1:],  # wrong magic byte
        b"\xff\x00\x00\x00\x02" + good[5:],
        good[:-1],  # one byte short
        good[:9],
        good + b"\x00\x01",  # trailing bytes after a whole body: read as before (the body is whole)
        b"\x00\x00\x00\x00\x63" + good[5:],  # schema id 99: unknown
        b"\x00\x00\x00\x00\x02" + b"\xff" * 20,  # a string length beyond the body
        b"\x00\x00\x00\x00\x02\x08dev-\x80",  # not UTF-8... and short
    ]
    records = [kafka_record(good, 0), *[kafka_record(v, i + 1) for i, v in enumerate(values)]]
    rows = both(records)
    reasons = {r.offset: r.reason for r in rows.rejected}
    assert reasons[1] == reasons[2] == reasons[3] == reasons[5] == reasons[6] == "not_decodable"
    assert reasons[10] == "unknown_schema"
    assert "schema id 99" in next(r.message for r in rows.rejected if r.offset == 10)
    assert [s.offset for s in rows.sources][:2] == [0, 9]


def test_a_schema_id_unknown_at_first_is_read_once_the_registry_has_it(reader_kind: str) -> None:
    known: dict[int, FeedSchema] = {}
    builder = RowBuilder(V2, known.get)
    records = [kafka_record(VALID[0], 0), kafka_record(VALID[1], 1)]
    assert [r.reason for r in builder.build(records).rejected] == ["unknown_schema", "unknown_schema"]
    known.update(REGISTRY)
    assert_same(builder.build(records), reference_build(RowBuilder(V2, REGISTRY.get), records))


def test_a_record_the_direct_reader_refuses_is_read_by_schemaless_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a fastavro release changed its internals, rows would come slower, not go missing."""

    def refuse(*args: Any) -> Any:
        raise TypeError("changed")

    monkeypatch.setattr(fast_read, "_read_record", refuse)
    monkeypatch.setattr(fast_read, "_read_data", refuse)
    records = [kafka_record(v, i) for i, v in enumerate([*VALID, VALID[1][:-2]])]
    rows = both(records)
    assert len(rows.rows) == len(VALID)
    assert [r.reason for r in rows.rejected] == ["not_decodable"]
    assert "changed" not in rows.rejected[0].message


def test_the_current_version_is_read_without_schemaless_readers_set_up() -> None:
    if fast_read._read_data is None:
        pytest.skip("fastavro has no Cython reader here")
    builder = RowBuilder(V2, REGISTRY.get)
    builder.build([kafka_record(v, i) for i, v in enumerate(VALID)])
    plans = {p.schema_id: p for p in builder._plans.values()}
    assert plans[2].read is fast_read._read_record
    assert plans[1].read is fast_read._read_data  # schema resolution: through _read_data


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(VALID) - 1),
            st.sampled_from(["whole", "cut", "extend", "flip", "id"]),
            st.integers(0, 200),
            st.binary(max_size=8),
        ),
        max_size=25,
    )
)
def test_damaged_values_give_the_reference_rows_and_rejections(changes: list[tuple[int, str, int, bytes]]) -> None:
    values = []
    for index, how, at, extra in changes:
        value = VALID[index]
        if how == "cut":
            value = value[: at % (len(value) + 1)]
        elif how == "extend":
            value += extra
        elif how == "flip":
            i = at % len(value)
            value = value[:i] + bytes([value[i] ^ (1 + at % 255)]) + value[i + 1 :]
        elif how == "id":
            value = b"\x00\x00\x00\x00" + bytes([at % 4]) + value[5:]
        values.append(value)
    rows = both([kafka_record(v, i) for i, v in enumerate(values)])
    assert len(rows.rows) + len(rows.rejected) == len(values)
