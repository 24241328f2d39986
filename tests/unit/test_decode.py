"""FeedDecoder: device payloads (JSON, CSV, Avro) to records ready for Avro encoding, or a PayloadError."""

from __future__ import annotations

import io
import string
from datetime import UTC, datetime
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.connector.model import Feed
from hub.errors import ConfigError, PayloadError, SchemaError
from hub.ingest.decode import FeedDecoder
from hub.schema.wire import WireEncoder

AIR_QUALITY: dict[str, Any] = {
    "type": "record",
    "name": "AirQuality",
    "namespace": "hub.air",
    "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "pm25", "type": "double"},
        {"name": "pm10", "type": ["null", "double"], "default": None},
        {"name": "temperature", "type": ["null", "float"], "default": None},
        {"name": "humidity", "type": ["null", "int"], "default": None},
        {"name": "samples", "type": ["null", "long"], "default": None},
        {
            "name": "level",
            "type": ["null", {"type": "enum", "name": "Level", "symbols": ["good", "moderate", "poor"]}],
            "default": None,
        },
        {"name": "calibrated", "type": "boolean", "default": False},
        {"name": "site", "type": ["null", "string"], "default": None},
    ],
}


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(raw)
    assert isinstance(schema, dict)
    return schema


SCHEMA = parse(AIR_QUALITY)
MICROS_SCHEMA = parse(
    {
        "type": "record",
        "name": "Micro",
        "fields": [
            {"name": "device_id", "type": "string"},
            {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "pm25", "type": "double"},
        ],
    }
)

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
RECEIVED_MS = NOW_MS + 250
CSV_COLUMNS = ["sensor", "ts", "pm2_5", "pm10", "temp_f", "humidity", "level"]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def make_feed(**overrides: Any) -> Feed:
    base: dict[str, Any] = {
        "name": "air_quality",
        "description": "Air quality sensors",
        "licence": "CC-BY-4.0",
        "schema": "air_quality",
        "topic": "air/{device_id}",
        "fields": {"pm25": "pm2_5"},
    }
    base.update(overrides)
    return Feed.model_validate(base)


def make_decoder(schema: dict[str, Any] = SCHEMA, **overrides: Any) -> FeedDecoder:
    return FeedDecoder(make_feed(**overrides).spec(), schema, now=NOW.timestamp)


def csv_decoder(**overrides: Any) -> FeedDecoder:
    options: dict[str, Any] = {
        "format": "csv",
        "csv": {"columns": CSV_COLUMNS},
        "device_id": {"source": "field", "field": "sensor"},
        "time": {"field": "ts"},
        "fields": {"pm25": "pm2_5", "temperature": "temp_f"},
        "topic": "air/csv",
    }
    options.update(overrides)
    return make_decoder(**options)


def json_payload(**fields: Any) -> bytes:
    body: dict[str, Any] = {"time": "2026-11-23T09:59:00Z", "pm2_5": 12.5}
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not DROP})


DROP = object()


def rejected(decoder: FeedDecoder, payload: bytes, device: str | None = "aq-0042") -> PayloadError:
    with pytest.raises(PayloadError) as info:
        decoder.decode(payload, device, RECEIVED_MS)
    return info.value


# JSON


def test_valid_json_payload_decodes_to_a_record_with_int_times() -> None:
    payload = orjson.dumps(
        {
            "time": "2026-11-23T09:59:30.123Z",
            "pm2_5": 12.5,
            "pm10": 20,
            "temperature": 11.5,
            "humidity": 63,
            "samples": 12_000_000_000,
            "level": "good",
            "calibrated": True,
            "site": "Town Hall",
        }
    )
    assert make_decoder().decode(payload, "aq-0042", RECEIVED_MS) == {
        "device_id": "aq-0042",
        "time": ms("2026-11-23T09:59:30.123+00:00"),
        "pm25": 12.5,
        "pm10": 20.0,
        "temperature": 11.5,
        "humidity": 63,
        "samples": 12_000_000_000,
        "level": "good",
        "calibrated": True,
        "site": "Town Hall",
    }


def test_absent_nullable_fields_are_null_and_absent_fields_with_a_default_take_it() -> None:
    record = make_decoder().decode(json_payload(), "aq-0042", RECEIVED_MS)
    assert record["pm10"] is None
    assert record["level"] is None
    assert record["calibrated"] is False


def test_explicit_null_is_accepted_for_a_nullable_field() -> None:
    assert make_decoder().decode(json_payload(pm10=None), "aq-0042", RECEIVED_MS)["pm10"] is None


def test_extra_payload_fields_are_ignored() -> None:
    record = make_decoder().decode(json_payload(firmware="1.2.3", pm25=99.0), "aq-0042", RECEIVED_MS)
    assert "firmware" not in record
    assert record["pm25"] == 12.5  # read from pm2_5, as mapped


def test_integral_float_is_accepted_for_an_int_field() -> None:
    assert make_decoder().decode(json_payload(humidity=63.0), "aq-0042", RECEIVED_MS)["humidity"] == 63


def test_integer_is_accepted_for_a_double_field() -> None:
    record = make_decoder().decode(json_payload(pm2_5=12), "aq-0042", RECEIVED_MS)
    assert record["pm25"] == 12.0
    assert type(record["pm25"]) is float


def test_fahrenheit_is_converted_to_celsius_with_scale_and_offset() -> None:
    decoder = make_decoder(
        fields={"pm25": "pm2_5", "temperature": {"source": "temp_f", "scale": 0.5555555556, "offset": -17.7777777778}}
    )
    for fahrenheit, celsius in [(212, 100.0), (32.0, 0.0), (-40, -40.0), (51.3, 10.7222)]:
        record = decoder.decode(json_payload(temp_f=fahrenheit), "aq-0042", RECEIVED_MS)
        assert record["temperature"] == pytest.approx(celsius, abs=1e-4)


def test_unit_conversion_into_an_int_field_rounds_to_the_nearest_integer() -> None:
    decoder = make_decoder(fields={"pm25": "pm2_5", "humidity": {"source": "rh_permille", "scale": 0.1}})
    assert decoder.decode(json_payload(rh_permille=636), "aq-0042", RECEIVED_MS)["humidity"] == 64


def test_unit_conversion_of_a_string_value_is_wrong_type() -> None:
    decoder = make_decoder(fields={"pm25": "pm2_5", "temperature": {"source": "temp_f", "scale": 0.5}})
    error = rejected(decoder, json_payload(temp_f="warm"))
    assert error.code == "wrong_type"
    assert "'temperature' (from 'temp_f')" in str(error)


def test_unit_conversion_on_a_non_numeric_field_is_wrong_type() -> None:
    decoder = make_decoder(fields={"pm25": "pm2_5", "site": {"source": "site", "offset": 1}})
    error = rejected(decoder, json_payload(site="Town Hall"))
    assert error.code == "wrong_type"
    assert "'site'" in str(error)
    assert "scale/offset" in str(error)


def test_mapping_a_field_the_schema_does_not_have_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pm1"):
        make_decoder(fields={"pm1": "pm1_0"})


def test_schema_without_time_field_is_refused() -> None:
    schema = parse({"type": "record", "name": "NoTime", "fields": [{"name": "device_id", "type": "string"}]})
    with pytest.raises(SchemaError, match="time"):
        make_decoder(schema, fields={})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"time": "2026-11-23T09:59:00Z", "pm2_5": ', "not valid UTF-8 JSON"),
        (b"[1, 2, 3]", "an array in JSON"),
        (b'"hello"', "the string 'hello' in JSON"),
        (b"42", "the number 42 in JSON"),
        (b'{"pm2_5": "\xff"}', "not valid UTF-8 JSON"),
        (b"", "not valid UTF-8 JSON"),
    ],
)
def test_payload_that_is_not_a_json_object_is_not_decodable(payload: bytes, expected: str) -> None:
    error = rejected(make_decoder(), payload)
    assert error.code == "not_decodable"
    assert expected in str(error)


def test_payload_longer_than_the_limit_is_too_large() -> None:
    decoder = FeedDecoder(make_feed().spec(), SCHEMA, max_payload_bytes=64, now=NOW.timestamp)
    error = rejected(decoder, json_payload(site="x" * 100))
    assert error.code == "too_large"
    assert "at most 64" in str(error)


def test_missing_required_field_names_the_schema_field_and_the_payload_field() -> None:
    error = rejected(make_decoder(), json_payload(pm2_5=DROP))
    assert error.code == "missing_field"
    assert str(error) == "field 'pm25' is missing: expected it in payload field 'pm2_5'"


def test_wrong_type_names_the_field_the_expected_avro_type_and_what_was_found() -> None:
    error = rejected(make_decoder(), json_payload(pm2_5="high"))
    assert error.code == "wrong_type"
    assert str(error) == "field 'pm25' (from 'pm2_5'): expected a number (Avro double), got the string 'high'"


@pytest.mark.parametrize(
    ("fields", "named", "found"),
    [
        ({"pm2_5": True}, "'pm25' (from 'pm2_5')", "the boolean true"),
        ({"humidity": 63.5}, "'humidity'", "the number 63.5"),
        ({"humidity": True}, "'humidity'", "the boolean true"),
        ({"humidity": "63"}, "'humidity'", "the string '63'"),
        ({"humidity": 2**31}, "'humidity'", "the number 2147483648"),
        ({"samples": 2**63}, "'samples'", "the number 9223372036854775808"),
        ({"level": "terrible"}, "'level'", "the string 'terrible'"),
        ({"calibrated": 1}, "'calibrated'", "the number 1"),
        ({"site": 12}, "'site'", "the number 12"),
        ({"site": ["a"]}, "'site'", "an array"),
        ({"site": "a\x00b"}, "'site'", "NUL"),
        ({"pm2_5": None}, "'pm25' (from 'pm2_5')", "null"),
        ({"temperature": 1e39}, "'temperature'", "the number 1e+39"),
    ],
)
def test_values_that_do_not_fit_the_avro_type_are_wrong_type(fields: dict[str, Any], named: str, found: str) -> None:
    error = rejected(make_decoder(), json_payload(**fields))
    assert error.code == "wrong_type"
    assert named in str(error)
    assert found in str(error)


def test_int_range_error_says_the_allowed_range() -> None:
    error = rejected(make_decoder(), json_payload(humidity=3_000_000_000))
    assert "-2147483648 to 2147483647 (Avro int)" in str(error)


def test_enum_error_lists_the_symbols() -> None:
    error = rejected(make_decoder(), json_payload(level="terrible"))
    assert "one of 'good', 'moderate', 'poor'" in str(error)


# Event time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T09:59:00Z", "2026-11-23T09:59:00+00:00"),
        ("2026-11-23T09:59:00.5Z", "2026-11-23T09:59:00.500+00:00"),
        ("2026-11-23T10:59:00+01:00", "2026-11-23T09:59:00+00:00"),
        ("2026-11-23T04:59:00-05:00", "2026-11-23T09:59:00+00:00"),
        ("2026-11-23 09:59:00", "2026-11-23T09:59:00+00:00"),
    ],
)
def test_iso8601_times_accept_z_and_offsets(text: str, expected: str) -> None:
    assert make_decoder().decode(json_payload(time=text), "aq-0042", RECEIVED_MS)["time"] == ms(expected)


def test_naive_iso8601_time_is_in_the_feed_timezone() -> None:
    decoder = make_decoder(time={"timezone": "Europe/Paris"})
    # Paris is UTC+1 in November.
    assert decoder.decode(json_payload(time="2026-11-23T10:59:00"), "d", RECEIVED_MS)["time"] == ms(
        "2026-11-23T09:59:00+00:00"
    )
    # An explicit offset wins over the feed's zone.
    assert decoder.decode(json_payload(time="2026-11-23T09:59:00Z"), "d", RECEIVED_MS)["time"] == ms(
        "2026-11-23T09:59:00+00:00"
    )


def test_naive_time_in_summer_uses_the_summer_offset() -> None:
    decoder = FeedDecoder(
        make_feed(time={"timezone": "Europe/Paris", "max_age": "365d"}).spec(),
        SCHEMA,
        now=NOW.timestamp,
    )
    # Paris is UTC+2 in July.
    record = decoder.decode(json_payload(time="2026-07-01T12:00:00"), "d", RECEIVED_MS)
    assert record["time"] == ms("2026-07-01T10:00:00+00:00")


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("epoch_s", NOW_MS // 1000 - 60),
        ("epoch_s", NOW_MS / 1000 - 60.0),
        ("epoch_s", str(NOW_MS // 1000 - 60)),
        ("epoch_s", f"{NOW_MS / 1000 - 60:.3f}"),
        ("epoch_ms", NOW_MS - 60_000),
        ("epoch_ms", str(NOW_MS - 60_000)),
        ("epoch_us", (NOW_MS - 60_000) * 1000 + 999),
        ("epoch_us", float((NOW_MS - 60_000) * 1000)),
    ],
)
def test_epoch_formats_accept_numbers_and_numeric_strings(fmt: str, value: Any) -> None:
    decoder = make_decoder(time={"field": "ts", "format": fmt})
    assert decoder.decode(json_payload(time=DROP, ts=value), "d", RECEIVED_MS)["time"] == NOW_MS - 60_000


def test_strftime_pattern_with_naive_times_uses_the_feed_timezone() -> None:
    decoder = make_decoder(time={"field": "when", "format": "%d/%m/%Y %H:%M:%S", "timezone": "America/New_York"})
    record = decoder.decode(json_payload(time=DROP, when="23/11/2026 04:59:00"), "d", RECEIVED_MS)
    assert record["time"] == ms("2026-11-23T09:59:00+00:00")


def test_timestamp_micros_schema_gets_microseconds() -> None:
    decoder = make_decoder(MICROS_SCHEMA, fields={"pm25": "pm2_5"})
    record = decoder.decode(json_payload(time="2026-11-23T09:59:00.123456Z"), "d", RECEIVED_MS)
    assert record["time"] == ms("2026-11-23T09:59:00+00:00") * 1000 + 123_456


def test_received_time_source_uses_the_receive_time() -> None:
    decoder = make_decoder(time={"source": "received"})
    assert decoder.decode(json_payload(time=DROP), "d", RECEIVED_MS)["time"] == RECEIVED_MS
    micro = make_decoder(MICROS_SCHEMA, time={"source": "received"})
    assert micro.decode(json_payload(time=DROP), "d", RECEIVED_MS)["time"] == RECEIVED_MS * 1000


@pytest.mark.parametrize(
    ("time", "fmt", "expected"),
    [
        ("yesterday", "iso8601", "ISO 8601"),
        (1700000000, "iso8601", "ISO 8601"),
        ("2026-13-45T99:00:00Z", "iso8601", "ISO 8601"),
        ("soon", "epoch_s", "seconds since 1970-01-01"),
        (True, "epoch_ms", "milliseconds since 1970-01-01"),
        ("23-11-2026", "%d/%m/%Y", "'%d/%m/%Y'"),
    ],
)
def test_unparseable_time_is_bad_time_naming_field_and_format(time: Any, fmt: str, expected: str) -> None:
    error = rejected(make_decoder(time={"field": "ts", "format": fmt}), json_payload(time=DROP, ts=time))
    assert error.code == "bad_time"
    assert "'time' (from 'ts')" in str(error)
    assert expected in str(error)


def test_missing_time_names_the_payload_field() -> None:
    error = rejected(make_decoder(time={"field": "ts"}), json_payload(time=DROP))
    assert error.code == "missing_field"
    assert "'ts'" in str(error)


def test_time_older_than_max_age_is_out_of_range_saying_by_how_much() -> None:
    error = rejected(make_decoder(), json_payload(time="2026-11-13T10:00:00Z"))
    assert error.code == "time_out_of_range"
    assert "is 10 days old, 3 days more than this feed accepts (time.max_age 7 days)" in str(error)


def test_time_further_than_max_future_is_out_of_range_saying_by_how_much() -> None:
    error = rejected(make_decoder(), json_payload(time="2026-11-23T11:30:00Z"))
    assert error.code == "time_out_of_range"
    assert "1 hour 30 minutes in the future, 1 hour 25 minutes more" in str(error)
    assert "time.max_future 5 minutes" in str(error)


def test_absurd_epoch_value_is_out_of_range_not_a_crash() -> None:
    decoder = make_decoder(time={"field": "ts", "format": "epoch_ms"})
    assert rejected(decoder, json_payload(time=DROP, ts=1e300)).code == "time_out_of_range"
    assert rejected(decoder, json_payload(time=DROP, ts=-(2**62))).code == "time_out_of_range"


# Device id


def test_device_id_from_the_topic() -> None:
    assert make_decoder().decode(json_payload(), "aq-0042", RECEIVED_MS)["device_id"] == "aq-0042"


def test_device_id_from_a_payload_field_string_or_integer() -> None:
    decoder = make_decoder(topic="air/all", device_id={"source": "field", "field": "sensor"})
    assert decoder.decode(json_payload(sensor="lab:a_1.b-2"), None, RECEIVED_MS)["device_id"] == "lab:a_1.b-2"
    assert decoder.decode(json_payload(sensor=4711), None, RECEIVED_MS)["device_id"] == "4711"


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("", "is empty"),
        ("x" * 129, "129 characters long"),
        ("aq 42", "outside A-Z a-z 0-9"),
        ("aq/42", "outside A-Z a-z 0-9"),
        ("capteur-é", "outside A-Z a-z 0-9"),
        (None, "topic has no device id"),
    ],
)
def test_bad_device_id_from_the_topic(device: str | None, expected: str) -> None:
    error = rejected(make_decoder(), json_payload(), device=device)
    assert error.code == "bad_device_id"
    assert expected in str(error)


@pytest.mark.parametrize("sensor", [True, 4.5, None, ["a"], "bad id"])
def test_bad_device_id_from_a_field(sensor: Any) -> None:
    decoder = make_decoder(topic="air/all", device_id={"source": "field", "field": "sensor"})
    error = rejected(decoder, json_payload(sensor=sensor), device=None)
    assert error.code == "bad_device_id"
    assert "'sensor'" in str(error)


def test_missing_device_id_field_is_missing_field() -> None:
    decoder = make_decoder(topic="air/all", device_id={"source": "field", "field": "sensor"})
    error = rejected(decoder, json_payload(), device=None)
    assert error.code == "missing_field"
    assert "'sensor'" in str(error)


# CSV


def test_valid_csv_line_decodes_with_conversions_per_avro_type() -> None:
    record = csv_decoder().decode(b"aq-7,2026-11-23T09:59:00Z,12.5,20,11.25,63,poor\r\n", None, RECEIVED_MS)
    assert record == {
        "device_id": "aq-7",
        "time": ms("2026-11-23T09:59:00+00:00"),
        "pm25": 12.5,
        "pm10": 20.0,
        "temperature": 11.25,
        "humidity": 63,
        "samples": None,  # no column
        "level": "poor",
        "calibrated": False,  # no column: schema default
        "site": None,
    }


def test_empty_csv_values_are_null_for_nullable_fields() -> None:
    record = csv_decoder().decode(b"aq-7,2026-11-23T09:59:00Z,12.5,,,,", None, RECEIVED_MS)
    assert (record["pm10"], record["temperature"], record["humidity"], record["level"]) == (None, None, None, None)


def test_empty_csv_value_for_a_required_field_is_missing_field() -> None:
    error = rejected(csv_decoder(), b"aq-7,2026-11-23T09:59:00Z,,1,2,3,good")
    assert error.code == "missing_field"
    assert str(error) == "field 'pm25' (from column 'pm2_5') is empty"


def test_csv_booleans_epoch_times_and_a_custom_delimiter() -> None:
    decoder = csv_decoder(
        csv={"columns": ["sensor", "ts", "pm2_5", "calibrated"], "delimiter": ";"},
        time={"field": "ts", "format": "epoch_s"},
    )
    seconds = NOW_MS // 1000 - 60
    for text, expected in [("true", True), ("1", True), ("FALSE", False), ("0", False)]:
        record = decoder.decode(f"aq-7;{seconds};12.5;{text}".encode(), None, RECEIVED_MS)
        assert record["calibrated"] is expected
        assert record["time"] == seconds * 1000
    error = rejected(decoder, f"aq-7;{seconds};12.5;yes".encode())
    assert error.code == "wrong_type"
    assert "field 'calibrated'" in str(error)


def test_quoted_csv_values_may_contain_the_delimiter() -> None:
    decoder = csv_decoder(csv={"columns": ["sensor", "ts", "pm2_5", "site"]})
    record = decoder.decode(b'aq-7,2026-11-23T09:59:00Z,12.5,"Town Hall, roof"', None, RECEIVED_MS)
    assert record["site"] == "Town Hall, roof"


def test_csv_header_line_is_recognised_by_default_as_skippable() -> None:
    error = rejected(csv_decoder(), (",".join(CSV_COLUMNS) + "\n").encode())
    assert error.code == "header_line"
    assert "skipped" in str(error)
    header_off = csv_decoder(csv={"columns": CSV_COLUMNS, "header": False})
    with_header_off = rejected(header_off, ",".join(CSV_COLUMNS).encode())
    assert with_header_off.code != "header_line"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"aq-7,2026-11-23T09:59:00Z,12.5", "expected 7 values separated by ',' (sensor, ts, pm2_5"),
        (b"aq-7,2026-11-23T09:59:00Z,12.5,1,2,3,good,extra", "found 8"),
        (b"aq-7,2026-11-23T09:59:00Z,12.5,1,2,3,good\naq-8,2026-11-23T09:59:00Z,1,1,2,3,good", "several lines"),
        (b"aq-7,\xff\xfe,12.5,1,2,3,good", "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_malformed_csv_is_not_decodable(payload: bytes, expected: str) -> None:
    error = rejected(csv_decoder(), payload)
    assert error.code == "not_decodable"
    assert expected in str(error)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        (b"aq-7,2026-11-23T09:59:00Z,high,1,2,3,good", "field 'pm25' (from column 'pm2_5')"),
        (b"aq-7,2026-11-23T09:59:00Z,12.5,1,2,63.5,good", "field 'humidity'"),
        (b"aq-7,2026-11-23T09:59:00Z,12.5,1,2,3,awful", "field 'level'"),
        (b"aq-7,2026-11-23T09:59:00Z,12.5,nan,2,3,good", "field 'pm10'"),
    ],
)
def test_csv_values_that_do_not_convert_are_wrong_type(line: bytes, named: str) -> None:
    error = rejected(csv_decoder(), line)
    assert error.code == "wrong_type"
    assert named in str(error)


# Avro


def avro_body(record: dict[str, Any], schema: dict[str, Any] = SCHEMA) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


AVRO_RECORD: dict[str, Any] = {
    "device_id": "aq-0042",
    "time": NOW_MS - 60_000,
    "pm25": 12.5,
    "pm10": None,
    "temperature": 11.5,
    "humidity": 63,
    "samples": None,
    "level": "moderate",
    "calibrated": True,
    "site": None,
}


def test_valid_avro_body_decodes_to_the_same_record() -> None:
    decoder = make_decoder(format="avro", fields={})
    assert decoder.decode(avro_body(AVRO_RECORD), "aq-0042", RECEIVED_MS) == AVRO_RECORD


def test_avro_device_id_comes_from_the_topic_when_configured() -> None:
    decoder = make_decoder(format="avro", fields={})
    assert decoder.decode(avro_body(AVRO_RECORD), "other-7", RECEIVED_MS)["device_id"] == "other-7"


def test_avro_device_id_from_the_body_is_checked() -> None:
    decoder = make_decoder(
        format="avro", fields={}, topic="air/all", device_id={"source": "field", "field": "device_id"}
    )
    assert decoder.decode(avro_body(AVRO_RECORD), None, RECEIVED_MS)["device_id"] == "aq-0042"
    error = rejected(decoder, avro_body({**AVRO_RECORD, "device_id": "has space"}), device=None)
    assert error.code == "bad_device_id"


def test_avro_time_is_checked_against_the_range() -> None:
    decoder = make_decoder(format="avro", fields={})
    error = rejected(decoder, avro_body({**AVRO_RECORD, "time": NOW_MS - 30 * 86_400_000}))
    assert error.code == "time_out_of_range"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "not an Avro binary body of schema hub.air.AirQuality"),
        (b"\x02a", "not an Avro binary body"),
        (avro_body(AVRO_RECORD) + b"\x00\x00", "2 bytes after the Avro record"),
        (b"\x00\x00\x00\x00\x07" + avro_body(AVRO_RECORD), "not an Avro binary body"),
    ],
)
def test_malformed_avro_is_not_decodable(payload: bytes, expected: str) -> None:
    error = rejected(make_decoder(format="avro", fields={}), payload)
    assert error.code == "not_decodable"
    assert expected in str(error)


def test_avro_int_outside_32_bits_is_wrong_type() -> None:
    # A long and an int share one binary encoding, so a device can send 2**40 for an int field.
    as_long = [{**f, "type": ["null", "long"]} if f["name"] == "humidity" else f for f in AIR_QUALITY["fields"]]
    body = avro_body({**AVRO_RECORD, "humidity": 2**40}, parse({**AIR_QUALITY, "fields": as_long}))
    error = rejected(make_decoder(format="avro", fields={}), body)
    assert error.code == "wrong_type"
    assert "'humidity'" in str(error)


def test_avro_schema_with_an_array_of_nulls_is_refused_for_avro_payloads() -> None:
    schema = parse(
        {
            "type": "record",
            "name": "Arr",
            "fields": [
                {"name": "device_id", "type": "string"},
                {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "nothing", "type": {"type": "array", "items": "null"}},
            ],
        }
    )
    with pytest.raises(SchemaError, match="array"):
        make_decoder(schema, format="avro", fields={})


# Properties: hostile input only ever raises PayloadError; whatever is accepted can be encoded.

FORMAT_DECODERS = {
    "json": make_decoder(),
    "csv": csv_decoder(),
    "avro": make_decoder(format="avro", fields={}),
}
ENCODER = WireEncoder(1, SCHEMA)


@pytest.mark.parametrize("fmt", sorted(FORMAT_DECODERS))
@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_payload_error(fmt: str, payload: bytes) -> None:
    decoder = FORMAT_DECODERS[fmt]
    try:
        record = decoder.decode(payload, "aq-0042", RECEIVED_MS)
    except PayloadError:
        return
    ENCODER.encode(record)


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
JSON_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON numbers orjson reads as int
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    JSON_INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
TIMES = st.sampled_from(["2026-11-23T09:59:00Z", "2026-11-23T10:59:00+01:00", "2026-11-23T09:58:00"])


def mostly(good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = JSON_VALUES) -> st.SearchStrategy[Any]:
    """Three times in four a plausible value, else anything."""
    return st.integers(0, 3).flatmap(lambda i: hostile if i == 0 else good)


REQUIRED = {"time": mostly(TIMES), "pm2_5": mostly(st.one_of(FINITE, JSON_INTS))}
OPTIONAL = {
    "pm10": mostly(st.one_of(st.none(), FINITE)),
    "temperature": mostly(st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False), FINITE, JSON_INTS)),
    "humidity": mostly(st.one_of(st.integers(-(2**31), 2**31 - 1), FINITE)),
    "samples": mostly(JSON_INTS),
    "level": mostly(st.sampled_from(["good", "moderate", "poor", "bad"])),
    "calibrated": mostly(st.booleans()),
    "site": mostly(TEXT),
}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.fixed_dictionaries(REQUIRED, optional=OPTIONAL), extra=st.dictionaries(TEXT, JSON_VALUES, max_size=3))
def test_any_json_record_the_decoder_accepts_can_be_encoded(body: dict[str, Any], extra: dict[str, Any]) -> None:
    payload = orjson.dumps({**extra, **body})
    try:
        record = FORMAT_DECODERS["json"].decode(payload, "aq-0042", RECEIVED_MS)
    except PayloadError:
        return
    encoded = ENCODER.encode(record)
    decoded = fastavro.schemaless_reader(io.BytesIO(encoded[5:]), SCHEMA)
    assert isinstance(decoded, dict)
    assert decoded["device_id"] == "aq-0042"


CSV_HOSTILE = st.one_of(
    st.text(alphabet=string.digits + ".-eE", max_size=8),
    st.sampled_from(["", "good", "true", "nan", "inf", "1e400", "1" * 5000, "2026-11-23T09:59:00Z", "aq-7"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters='\r\n"'), max_size=8),
)
CSV_NUMBERS = st.one_of(FINITE.map(repr), JSON_INTS.map(str), st.just(""))
CSV_LINES = st.tuples(
    mostly(st.sampled_from(["aq-7", "4711", "lab:b.2"]), CSV_HOSTILE),
    mostly(TIMES, CSV_HOSTILE),
    mostly(CSV_NUMBERS, CSV_HOSTILE),
    mostly(CSV_NUMBERS, CSV_HOSTILE),
    mostly(CSV_NUMBERS, CSV_HOSTILE),
    mostly(st.one_of(st.integers(-(2**31), 2**31 - 1).map(str), st.just("")), CSV_HOSTILE),
    mostly(st.sampled_from(["good", "moderate", "poor", ""]), CSV_HOSTILE),
).map(",".join)


@settings(max_examples=500, deadline=None)
@given(line=CSV_LINES)
def test_any_csv_line_the_decoder_accepts_can_be_encoded(line: str) -> None:
    try:
        record = FORMAT_DECODERS["csv"].decode(line.encode(), None, RECEIVED_MS)
    except PayloadError:
        return
    ENCODER.encode(record)
