"""`hub connector init`: a config and schema drafted from samples, every guess with its evidence."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.connector.draft import DraftError, draft
from hub.connector.samples import SampleError, read_samples
from hub.control.desired import load_desired
from hub.ingest.decode import FeedDecoder
from hub.settings import HubSettings

NOW_MS = int(time.time() * 1000)


def nested(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "station": {"id": f"st-{i:03d}", "site": "north"},
        "obs": {"time": NOW_MS - i * 60_000, "temp": {"f": 60.0 + i}, "rh": 40 + i},
        **extra,
    }


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def jsonl(tmp_path: Path, records: list[dict[str, Any]], name: str = "samples.jsonl") -> Path:
    return write(tmp_path, name, "\n".join(json.dumps(r) for r in records))


def init(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["connector", "init", "--out", str(tmp_path / "out"), *args])


def test_a_nested_json_partner_is_drafted_with_evidence_and_passes_plan_and_decodes(tmp_path: Path) -> None:
    samples = [nested(i, battery={"v": 3.9}) for i in range(1, 6)] + [nested(6)]
    result = init(tmp_path, "--sample", str(jsonl(tmp_path, samples)), "--partner", "nested_co", "--feed", "weather")
    assert result.exit_code == 0, result.output
    assert "station.id" in result.output and "the device id (schema field station_id)" in result.output
    assert "epoch milliseconds in 6 of 6 samples" in result.output
    assert "converted from Fahrenheit" in result.output
    assert "missing or null in 1" in result.output
    [partner] = load_desired(tmp_path / "out/connectors/nested_co.yaml", HubSettings(), tmp_path / "out/schemas")
    feed = partner.feeds[0]
    assert (feed.feed.device_id.field, feed.feed.device_id.schema_field) == ("station.id", "station_id")
    assert (feed.feed.time.field, feed.feed.time.format, feed.feed.time.schema_field) == (
        "obs.time",
        "epoch_ms",
        "obs_time",
    )
    schema = json.loads((tmp_path / "out/schemas/weather.avsc").read_text())
    assert [f["name"] for f in schema["fields"]][:2] == ["station_id", "obs_time"]  # the partner's names, kept
    decoder = FeedDecoder(feed.feed.spec(), feed.schema.parsed)
    record = decoder.decode(json.dumps(samples[0]).encode(), None, NOW_MS)
    assert record["device_id"] == "st-001"
    assert record["obs_temp_c"] == pytest.approx((61.0 - 32) * 5 / 9)
    assert decoder.decode(json.dumps(samples[5]).encode(), None, NOW_MS)["battery_v"] is None


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    sample = str(jsonl(tmp_path, [nested(1)]))
    assert init(tmp_path, "--sample", sample, "--partner", "nested_co", "--feed", "weather").exit_code == 0
    before = (tmp_path / "out/connectors/nested_co.yaml").read_text()
    again = init(tmp_path, "--sample", sample, "--partner", "nested_co", "--feed", "weather", "--schema", "other")
    assert again.exit_code == 1
    assert "already exist" in again.output and "nothing was written" in again.output
    assert (tmp_path / "out/connectors/nested_co.yaml").read_text() == before
    assert not (tmp_path / "out/schemas/other.avsc").exists()


@pytest.mark.parametrize(
    ("value", "fmt", "evidence"),
    [
        (NOW_MS // 1000, "epoch_s", "epoch seconds"),
        (NOW_MS * 1000, "epoch_us", "epoch microseconds"),
        ("2026-11-23T10:15:00+01:00", "iso8601", "ISO 8601 times with an offset"),
    ],
    ids=["epoch_s", "epoch_us", "iso8601"],  # ids without the clock: every process collects the same tests
)
def test_the_time_format_is_found_from_the_values(tmp_path: Path, value: Any, fmt: str, evidence: str) -> None:
    d = draft(read_samples([jsonl(tmp_path, [{"sensor_id": "a", "ts": value, "v": 1.5}] * 2)]))
    assert d.time is not None and d.time[2] == fmt
    assert any(evidence in g.evidence for g in d.guesses)


def test_two_equally_likely_times_are_reported_for_the_partner_to_choose(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "time": NOW_MS, "timestamp": NOW_MS + 5, "v": 1}])
    with pytest.raises(DraftError) as info:
        draft(read_samples([path]))
    assert "time" in str(info.value) and "timestamp" in str(info.value) and "--time-field" in str(info.value)
    chosen = draft(read_samples([path]), time_field="timestamp")
    assert chosen.time is not None and chosen.time[0] == "timestamp"
    assert [f.name for f in chosen.fields] == ["time_2", "v"]  # the other is a plain field, not the key


def test_an_enum_like_field_and_a_device_id_from_the_topic(tmp_path: Path) -> None:
    records = [{"t": NOW_MS, "status": s, "level": 1.5} for s in ["OPEN", "FULL", "OPEN", "OPEN", "FULL", "OPEN"]]
    d = draft(read_samples([jsonl(tmp_path, records)]))
    assert d.device is None  # no id in the payload: the topic carries it
    status = next(f for f in d.fields if f.name == "status")
    assert status.avro_type == {"type": "enum", "name": "Status", "symbols": ["FULL", "OPEN"]}


def test_a_csv_sample_with_its_header_is_drafted(tmp_path: Path) -> None:
    iso = "2026-11-23T08:15:00Z"
    path = write(tmp_path, "park.csv", f"Time,Occupied,Car Park ID\n{iso},412,cp-1\n{iso},13,cp-2\n")
    d = draft(read_samples([path]))
    assert d.format == "csv"
    assert d.device == ("Car Park ID", "car_park_id")
    assert d.time is not None and d.time[:3] == ("Time", "time", "iso8601")
    assert [(f.name, f.source, f.avro_type) for f in d.fields] == [("occupied", "Occupied", "long")]


def test_an_avro_container_sample_keeps_the_devices_schema(tmp_path: Path) -> None:
    fields = [
        {"name": "sensor", "type": "string"},
        {"name": "at_ms", "type": "long"},
        {"name": "laeq", "type": "double"},
    ]
    schema = {"type": "record", "name": "Noise", "fields": fields}
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(schema), [{"sensor": "n1", "at_ms": NOW_MS, "laeq": 51.5}])
    result = init(tmp_path, "--sample", str(write_bytes(tmp_path / "noise.avro", buf.getvalue())),
                  "--partner", "noisy", "--feed", "noise")  # fmt: skip
    assert result.exit_code == 0, result.output
    drafted = json.loads((tmp_path / "out/schemas/noise.avsc").read_text())
    assert drafted["fields"][1]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    [partner] = load_desired(tmp_path / "out/connectors/noisy.yaml", HubSettings(), tmp_path / "out/schemas")
    assert partner.feeds[0].schema.renamed == (("sensor", "device_id"), ("at_ms", "time"))


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "text", "fmt", "said"),
    [
        ("empty.json", "  \n", None, "is empty"),
        ("x.json", "time,value\n1,2\n", None, "not JSON (format json)"),
        ("x.json", "[1, 2]", None, "not a JSON object"),
        ("x.csv", "1,2\n3,4\n", None, "does not name the columns"),
        ("x.csv", "a,b\n1,2,3\n", None, "line 2 has 3 values"),
        ("x.json", '{"id": "a", "v": 1}\n{"id": "b", "v": "high"}', None, "too inconsistent"),
        ("x.json", '{"id": "a", "v": {"x": 1}}\n{"id": "b", "v": 2}', None, "too inconsistent"),
        ("x.bin", "not avro", "avro", "not an Avro object container file"),
    ],
)
def test_bad_samples_get_a_clear_error_saying_what_was_found(
    tmp_path: Path, name: str, text: str, fmt: str | None, said: str
) -> None:
    with pytest.raises(SampleError) as info:
        draft(read_samples([write(tmp_path, name, text)], fmt))
    assert said in str(info.value)
    result = init(tmp_path, "--sample", str(tmp_path / name), "--partner", "p", "--feed", "f",
                  *(["--format", fmt] if fmt else []))  # fmt: skip
    assert result.exit_code == 1 and said in result.output
    assert not (tmp_path / "out").exists()
