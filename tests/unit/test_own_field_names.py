"""A partner's own names for its device id and event time fields: the config says which is which."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from hub.control.desired import load_desired
from hub.errors import ConfigError, PayloadError
from hub.ingest.decode import FeedDecoder
from hub.landing.rows import RowBuilder
from hub.schema.avro import DEVICE_ID, TIME
from hub.schema.wire import WireEncoder
from hub.settings import HubSettings

NOW_MS = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)
WEATHER: dict[str, Any] = {
    "type": "record",
    "name": "Weather",
    "namespace": "partner.weather",
    "fields": [
        {"name": "station_id", "type": "string", "doc": "the station's serial"},
        {"name": "observed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "temperature_c", "type": "double"},
    ],
}
CONFIG = """\
partner: {{id: nested_co, name: Nested Co, kind: private, contact: ops@nested.example}}
feeds:
  - name: weather
    description: Weather stations
    licence: CC0-1.0
    schema: weather
    topic: {topic}
    format: {fmt}
    device_id:
      field: {device_field}
      schema_field: station_id
    time:
      field: {time_field}
      format: epoch_ms
      schema_field: {time_name}
{fields}"""


def desired(tmp_path: Path, schema: dict[str, Any] = WEATHER, **values: str) -> Any:
    options = {"topic": "weather", "fmt": "json", "device_field": "station.id", "time_field": "obs.t",
               "time_name": "observed_at", "fields": "    fields: {temperature_c: obs.temp}\n"}  # fmt: skip
    options.update(values)
    (tmp_path / "connectors").mkdir(exist_ok=True)
    (tmp_path / "schemas").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "weather.avsc").write_text(json.dumps(schema))
    path = tmp_path / "connectors" / "nested_co.yaml"
    path.write_text(CONFIG.format(**options))
    [partner] = load_desired(path, HubSettings(), tmp_path / "schemas")
    return partner.feeds[0]


def refused(tmp_path: Path, schema: dict[str, Any] = WEATHER, **values: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        desired(tmp_path, schema, **values)
    return info.value


def test_the_hub_registers_the_partners_schema_with_its_key_fields_named_device_id_and_time(tmp_path: Path) -> None:
    feed = desired(tmp_path)
    registered = json.loads(feed.schema.canonical)
    names = [f["name"] for f in registered["fields"]]
    assert names == [DEVICE_ID, TIME, "temperature_c"]
    assert registered["fields"][0]["aliases"] == ["station_id"]
    assert registered["fields"][0]["doc"] == "the station's serial"
    assert registered["fields"][1]["aliases"] == ["observed_at"]
    assert [c.name for c in feed.table.columns][:2] == [DEVICE_ID, TIME]
    assert feed.schema.renamed == (("station_id", DEVICE_ID), ("observed_at", TIME))


def test_messages_of_a_partner_with_own_names_land_in_the_device_id_and_time_columns(tmp_path: Path) -> None:
    feed = desired(tmp_path)
    decoder = FeedDecoder(feed.feed.spec(), feed.schema.parsed, now=lambda: NOW_MS / 1000)
    payload = orjson.dumps({"station": {"id": "st-1"}, "obs": {"t": NOW_MS, "temp": 21.5}})
    value = WireEncoder(7, feed.schema.parsed).encode(decoder.decode(payload, None, NOW_MS))
    rows = RowBuilder(feed.schema, {7: feed.schema}.get).build([_Record(value)])
    assert rows.columns[:3] == [DEVICE_ID, TIME, "temperature_c"]
    assert rows.rows[0][:3] == ("st-1", NOW_MS * 1000, 21.5)


def test_refusals_name_the_partners_own_field_names(tmp_path: Path) -> None:
    feed = desired(tmp_path)
    decoder = FeedDecoder(feed.feed.spec(), feed.schema.parsed, now=lambda: NOW_MS / 1000)
    with pytest.raises(PayloadError) as info:
        decoder.decode(orjson.dumps({"station": {"id": "st-1"}, "obs": {"temp": 1.0}}), None, NOW_MS)
    assert str(info.value) == "field 'observed_at' is missing: expected it in payload field 'obs.t'"
    with pytest.raises(PayloadError) as info:
        decoder.decode(orjson.dumps({"obs": {"t": NOW_MS, "temp": 1.0}}), None, NOW_MS)
    assert str(info.value) == "field 'station_id' is missing: expected it in payload field 'station.id'"


def test_avro_devices_write_with_the_partners_schema_and_the_hub_reads_them(tmp_path: Path) -> None:
    feed = desired(tmp_path, device_field="station_id", time_field="observed_at", fmt="avro", fields="")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(WEATHER),
                               {"station_id": "st-9", "observed_at": NOW_MS, "temperature_c": 3.0})  # fmt: skip
    decoder = FeedDecoder(feed.feed.spec(), feed.schema.parsed, now=lambda: NOW_MS / 1000)
    assert decoder.decode(body.getvalue(), None, NOW_MS) == {"device_id": "st-9", "time": NOW_MS, "temperature_c": 3.0}


def test_a_schema_field_the_schema_lacks_is_refused_at_the_config_key_to_change(tmp_path: Path) -> None:
    error = refused(tmp_path, time_name="observed")
    assert error.field == "feeds[0].time.schema_field"
    assert error.line == 15
    assert "has no field 'observed'" in error.reason and "change time.schema_field" in error.reason


def test_a_schema_with_another_field_called_time_is_refused_saying_what_to_rename(tmp_path: Path) -> None:
    schema = {**WEATHER, "fields": [*WEATHER["fields"], {"name": "time", "type": "string"}]}
    error = refused(tmp_path, schema)
    assert error.field == "feeds[0].time.schema_field"
    assert "rename the schema's field 'time'" in error.reason


def test_a_key_field_mapped_under_fields_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, fields="    fields: {station_id: other}\n")
    assert error.field == "feeds[0].fields.station_id"
    assert "`device_id:` section" in error.reason


def test_without_schema_field_a_schema_lacking_device_id_says_which_key_to_set(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "weather.avsc").write_text(json.dumps(WEATHER))
    config = CONFIG.format(topic="weather", fmt="json", device_field="s", time_field="t", time_name="observed_at",
                           fields="").replace("      schema_field: station_id\n", "")  # fmt: skip
    (tmp_path / "c.yaml").write_text(config)
    with pytest.raises(Exception, match=r"device_id\.schema_field"):
        load_desired(tmp_path / "c.yaml", HubSettings(), tmp_path / "schemas")


class _Record:
    topic, partition, offset, key = "t", 0, 0, None

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.headers: list[tuple[str, bytes]] = []
