"""Payload paths: one syntax for every field reference of a config, read from nested payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from hub.connector.loader import parse_connector
from hub.connector.model import Feed
from hub.connector.paths import parse_path, render_path
from hub.errors import ConfigError, PayloadError
from hub.ingest.decode import FeedDecoder
from hub.schema.avro import parse_feed_schema
from tests.feeds import record

NOW_MS = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)
WEATHER = parse_feed_schema(
    orjson.dumps(
        record(
            "Weather",
            {"name": "temperature_c", "type": "double"},
            {"name": "wind_ms", "type": ["null", "double"], "default": None},
            {"name": "pm25", "type": ["null", "double"], "default": None},
            {"name": "site", "type": ["null", "string"], "default": None},
        )
    ).decode(),
    "weather.avsc",
)
NESTED = {
    "station": {"id": "st-7", "site": {"name.full": "Town Hall"}},
    "obs": {"time": NOW_MS, "temp": {"f": 212.0}, "wind": {"speed": 3.5}},
    "readings": [{"value": 12.5}, {"value": 30.0}],
}


def feed(**overrides: Any) -> Feed:
    base: dict[str, Any] = {
        "name": "weather",
        "description": "Nested weather stations",
        "licence": "CC0-1.0",
        "schema": "weather",
        "topic": "weather",
        "device_id": {"field": "station.id"},
        "time": {"field": "obs.time", "format": "epoch_ms"},
        "fields": {
            "temperature_c": {"source": "obs.temp.f", "scale": 5 / 9, "offset": -160 / 9},
            "wind_ms": "obs.wind.speed",
            "pm25": "readings[0].value",
            "site": 'station.site["name.full"]',
        },
    }
    base.update(overrides)
    return Feed.model_validate(base)


def decode(payload: Any, **overrides: Any) -> dict[str, Any]:
    decoder = FeedDecoder(feed(**overrides).spec(), WEATHER.parsed, now=lambda: NOW_MS / 1000)
    return decoder.decode(orjson.dumps(payload), None, NOW_MS)


def refusal(payload: Any, **overrides: Any) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        decode(payload, **overrides)
    return info.value


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("pm2_5", ("pm2_5",)),
        ("station.id", ("station", "id")),
        ("obs.wind.speed", ("obs", "wind", "speed")),
        ("readings[0].value", ("readings", 0, "value")),
        ("readings[-1]", ("readings", -1)),
        ('["pm2.5"]', ("pm2.5",)),
        ("a['b.c'][2]", ("a", "b.c", 2)),
    ],
)
def test_path_syntax_reads_names_indexes_and_quoted_keys(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_path(text) == steps
    assert parse_path(render_path(steps)) == steps


@pytest.mark.parametrize("text", ["", ".a", "a.", "a..b", "a[", "a[x]", "a]b", "a[0]b", " a"])
def test_malformed_paths_are_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match=r"station\.id"):
        parse_path(text)


def test_nested_payload_decodes_every_reference_at_its_path() -> None:
    rec = decode(NESTED)
    assert rec["device_id"] == "st-7"
    assert rec["time"] == NOW_MS
    assert rec["temperature_c"] == pytest.approx(100.0)
    assert rec["wind_ms"] == 3.5
    assert rec["pm25"] == 12.5
    assert rec["site"] == "Town Hall"


def test_absent_or_null_parts_of_a_path_make_an_optional_field_null() -> None:
    rec = decode({**NESTED, "obs": {"time": NOW_MS, "temp": {"f": 50.0}, "wind": None}, "readings": []})
    assert rec["wind_ms"] is None
    assert rec["pm25"] is None


def test_a_missing_nested_field_is_refused_naming_the_field_and_its_path() -> None:
    error = refusal({**NESTED, "obs": {"time": NOW_MS, "wind": {"speed": 1.0}}})
    assert error.code == "missing_field"
    assert "'temperature_c'" in str(error) and "'obs.temp.f'" in str(error)
    error = refusal({**NESTED, "station": {"name": "x"}})
    assert error.code == "missing_field"
    assert str(error) == "field 'device_id' is missing: expected it in payload field 'station.id'"


def test_a_value_of_the_wrong_kind_on_the_way_is_a_wrong_type_naming_the_part() -> None:
    error = refusal({**NESTED, "obs": {"time": NOW_MS, "temp": "hot"}})
    assert error.code == "wrong_type"
    assert "'obs.temp'" in str(error) and "an object" in str(error) and "'hot'" in str(error)
    error = refusal({**NESTED, "readings": {"value": 1}})
    assert "'readings'" in str(error) and "an array" in str(error)


def test_a_nested_time_in_the_wrong_format_names_the_field() -> None:
    error = refusal({**NESTED, "obs": {"time": "yesterday", "temp": {"f": 1.0}}})
    assert error.code == "bad_time"
    assert "(from 'obs.time')" in str(error)


def test_flat_references_still_read_top_level_keys() -> None:
    flat = {"id": "s1", "t": NOW_MS, "tf": 32.0}
    rec = decode(flat, device_id={"field": "id"}, time={"field": "t", "format": "epoch_ms"},
                 fields={"temperature_c": {"source": "tf", "scale": 5 / 9, "offset": -160 / 9}})  # fmt: skip
    assert (rec["device_id"], rec["temperature_c"]) == ("s1", pytest.approx(0.0))


CONFIG = """\
partner: {{id: nested_co, name: Nested Co, kind: private, contact: ops@nested.example}}
feeds:
  - name: weather
    description: Weather
    licence: CC0-1.0
    schema: weather
    topic: weather/{{device_id}}
    format: {fmt}
{extra}    fields:
      temperature_c: {source}
"""


def test_a_malformed_path_is_refused_with_its_file_and_line() -> None:
    text = CONFIG.format(fmt="json", extra="", source="obs..temp")
    with pytest.raises(ConfigError) as info:
        parse_connector(text, "connectors/nested_co.yaml")
    assert info.value.line == 10
    assert info.value.field == "feeds[0].fields.temperature_c.source"
    assert "station.id" in info.value.reason


def test_a_nested_path_in_a_csv_feed_is_refused_because_csv_is_flat() -> None:
    extra = "    csv: {columns: [time, temp_f]}\n"
    with pytest.raises(ConfigError) as info:
        parse_connector(CONFIG.format(fmt="csv", extra=extra, source="obs.temp"), "connectors/nested_co.yaml")
    assert info.value.line == 11
    assert "CSV payloads are flat" in info.value.reason
    # A column whose own name holds a dot is a column, not a path.
    extra = "    csv: {columns: [time, obs.temp]}\n"
    assert parse_connector(CONFIG.format(fmt="csv", extra=extra, source="obs.temp"), "x.yaml").feeds[0]


def test_device_id_field_alone_means_the_id_is_in_the_payload() -> None:
    assert feed().device_id.source == "field"


def test_simulated_devices_write_each_reference_at_its_path() -> None:
    from hub.simulate import _put_at_path

    payload: dict[str, Any] = {}
    for path, value in (
        ("station.id", "st-7"),
        ("obs.time", NOW_MS),
        ("obs.temp.f", 212.0),
        ("readings[0].value", 1.5),
    ):
        _put_at_path(payload, path, value)
    rec = decode(payload)
    assert (rec["device_id"], rec["temperature_c"], rec["pm25"]) == ("st-7", pytest.approx(100.0), 1.5)


def test_a_path_is_checked_against_an_avro_schema_for_avro_payloads() -> None:
    from hub.control.schema_paths import path_problem

    schema = parse_feed_schema(
        orjson.dumps(record("Noise", {"name": "meta", "type": ["null", {"type": "record", "name": "Meta", "fields": [
            {"name": "sent", "type": "long"}, {"name": "tags", "type": {"type": "array", "items": "string"}}]}],
            "default": None})).decode(), "noise.avsc")  # fmt: skip
    assert path_problem(schema.parsed, "meta.sent") is None
    assert path_problem(schema.parsed, "meta.tags[0]") is None
    assert "has no field 'sant'" in (path_problem(schema.parsed, "meta.sant") or "")
    assert "not an array" in (path_problem(schema.parsed, "meta.sent[0]") or "")


def test_plan_shows_where_each_column_comes_from() -> None:
    from hub.control.mapping import feed_mapping

    pairs = dict((column, source) for source, column in feed_mapping(feed().spec(), WEATHER))
    assert pairs["device_id"] == "station.id"
    assert pairs["time"] == "obs.time (epoch_ms)"
    assert pairs["temperature_c"] == "obs.temp.f * 0.555556 - 17.7778"
    assert pairs["wind_ms"] == "obs.wind.speed (optional)"
