"""The Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from hub.errors import PayloadError
from hub.schema.wire import WireEncoder, decode_wire, encode_record


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(raw)
    assert isinstance(schema, dict)
    return schema


SCHEMA = parse(
    {
        "type": "record",
        "name": "AirQuality",
        "namespace": "hub.air",
        "fields": [
            {"name": "device_id", "type": "string"},
            {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "pm25", "type": "double"},
            {"name": "humidity", "type": ["null", "int"], "default": None},
            {"name": "samples", "type": "long", "default": 0},
            {
                "name": "level",
                "type": ["null", {"type": "enum", "name": "Level", "symbols": ["good", "moderate", "poor"]}],
                "default": None,
            },
            {"name": "calibrated", "type": "boolean"},
        ],
    }
)
TIME_MS = 1_795_427_940_123  # 2026-11-23T09:59:00.123Z
RECORD: dict[str, Any] = {
    "device_id": "aq-0042",
    "time": TIME_MS,
    "pm25": 12.5,
    "humidity": 63,
    "samples": 12_000_000_000,
    "level": "moderate",
    "calibrated": True,
}


def read_body(body: bytes) -> dict[str, Any]:
    record = fastavro.schemaless_reader(io.BytesIO(body), SCHEMA)
    assert isinstance(record, dict)
    return record


def test_encoded_record_starts_with_magic_byte_and_big_endian_schema_id() -> None:
    encoded = encode_record(0x01020304, SCHEMA, RECORD)
    assert encoded[:5] == b"\x00\x01\x02\x03\x04"


def test_wire_round_trip_through_fastavro_gives_the_same_record() -> None:
    schema_id, body = decode_wire(encode_record(42, SCHEMA, RECORD))
    assert schema_id == 42
    decoded = read_body(body)
    # fastavro reads timestamp-millis back as an aware datetime; the decoder hands ints to the encoder.
    assert decoded["time"] == datetime.fromtimestamp(TIME_MS / 1000, UTC)
    assert {**decoded, "time": TIME_MS} == RECORD


def test_wire_encoder_reuses_its_buffer_without_corrupting_earlier_results() -> None:
    encoder = WireEncoder(7, SCHEMA)
    first = encoder.encode(RECORD)
    second = encoder.encode({**RECORD, "device_id": "a-much-longer-device-identifier", "humidity": None})
    third = encoder.encode(RECORD)
    assert first == third == encode_record(7, SCHEMA, RECORD)
    assert read_body(decode_wire(second)[1])["device_id"] == "a-much-longer-device-identifier"
    assert read_body(decode_wire(first)[1])["device_id"] == "aq-0042"


def test_wire_encoder_accepts_an_unparsed_schema_dict() -> None:
    raw = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]}
    assert WireEncoder(1, raw).encode({"x": 1}) == b"\x00\x00\x00\x00\x01\x02"


def test_wire_encoder_works_again_after_a_failed_encoding() -> None:
    encoder = WireEncoder(7, SCHEMA)
    with pytest.raises(PayloadError):
        encoder.encode({**RECORD, "level": "awful"})
    assert encoder.encode(RECORD) == encode_record(7, SCHEMA, RECORD)


@pytest.mark.parametrize("schema_id", [-1, 2**32])
def test_schema_id_outside_four_unsigned_bytes_is_refused(schema_id: int) -> None:
    with pytest.raises(ValueError, match="4 unsigned bytes"):
        WireEncoder(schema_id, SCHEMA)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("level", "awful"),
        ("pm25", "high"),
        ("samples", 2**70),
        ("humidity", "63"),
        ("device_id", 42),
    ],
)
def test_value_avro_refuses_is_wrong_type_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(PayloadError) as info:
        WireEncoder(7, SCHEMA).encode({**RECORD, field: value})
    assert info.value.code == "wrong_type"
    assert f"field {field!r}" in str(info.value)


def test_string_that_is_not_unicode_text_is_wrong_type_naming_the_field() -> None:
    with pytest.raises(PayloadError) as info:
        WireEncoder(7, SCHEMA).encode({**RECORD, "device_id": "bad\ud800"})
    assert info.value.code == "wrong_type"
    assert "field 'device_id'" in str(info.value)


def test_decode_wire_returns_schema_id_and_body() -> None:
    assert decode_wire(b"\x00\x00\x00\x01\x00body") == (256, b"body")
    assert decode_wire(b"\x00\xff\xff\xff\xff") == (2**32 - 1, b"")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x01\x00\x00\x00\x07body", "starts with byte 0x01"),
        (b'{"json": true}', "starts with byte 0x7b"),
        (b"", "0 bytes"),
        (b"\x00\x00\x00\x07", "4 bytes"),
    ],
)
def test_decode_wire_rejects_a_bad_magic_byte_or_short_input(data: bytes, expected: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_wire(data)
    assert info.value.code == "not_decodable"
    assert expected in str(info.value)


def test_encoding_with_timestamp_types_dropped_is_byte_identical_and_still_takes_datetimes() -> None:
    from datetime import UTC, datetime

    import fastavro

    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "W",
            "fields": [
                {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
                {
                    "name": "nested",
                    "type": {"type": "array", "items": {"type": "long", "logicalType": "timestamp-millis"}},
                },
            ],
        }
    )
    for rec in (
        {"time": 1_795_427_940_123, "us": 1_795_427_940_123_456, "nested": [0, -1, 2**40]},
        {"time": -(2**40), "us": None, "nested": []},
    ):
        reference = io.BytesIO()
        fastavro.schemaless_writer(reference, schema, rec)
        assert WireEncoder(3, schema).encode(rec) == bytes([0, 0, 0, 0, 3]) + reference.getvalue()
    when = datetime(2026, 11, 23, 9, 59, 0, 123000, tzinfo=UTC)
    with_datetime = WireEncoder(3, schema).encode({"time": when, "us": when, "nested": [when]})
    as_ints = WireEncoder(3, schema).encode(
        {"time": 1_795_427_940_123, "us": 1_795_427_940_123_000, "nested": [1_795_427_940_123]}
    )
    assert with_datetime == as_ints
