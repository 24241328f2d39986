"""What a worker reads of an applied feed (`FeedSpec`) is what `hub apply` validated and stored (`Feed`)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.connector.feed_spec import FeedSpec, FieldSpec, PayloadFormat, TimeFormat
from hub.connector.loader import load_connector
from hub.connector.model import Feed

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_FEEDS = [
    (path.stem, f) for path in sorted((REPO / "connectors").glob("*.yaml")) for f in load_connector(path).feeds
]

NESTED_CSV_AND_CONVERTED: list[dict[str, Any]] = [
    {
        "name": "weather", "description": "d", "licence": "CC0-1.0", "schema": "weather", "topic": "weather",
        "device_id": {"field": "station.id"},
        "time": {"field": "obs.time", "format": "epoch_ms", "max_age": "30d", "max_future": "1h"},
        "fields": {"temperature_c": {"source": "obs.temp.f", "scale": 5 / 9, "offset": -160 / 9}, "wind": "w.s"},
    },
    {
        "name": "counts", "description": "d", "licence": "CC0-1.0", "schema": "counts", "topic": "c/{device_id}",
        "format": "csv", "csv": {"columns": ["t", "n"], "delimiter": ";", "header": False},
        "time": {"field": "t", "format": "%d/%m/%Y %H:%M:%S", "timezone": "Europe/Paris"},
    },
    {
        "name": "stamped", "description": "d", "licence": "CC0-1.0", "schema": "s", "topic": "s/{device_id}",
        "format": "avro", "time": {"source": "received"},
    },
]  # fmt: skip


def as_model_reads_it(feed: Feed) -> dict[str, Any]:
    """The model's values a worker uses, in the spec's shape."""
    t, d = feed.time, feed.device_id
    return {
        "name": feed.name, "topic": feed.topic, "format": feed.format,
        "csv": None if feed.csv is None else (tuple(feed.csv.columns), feed.csv.delimiter, feed.csv.header),
        "device_id": (d.source, d.field, d.schema_field),
        "time": (t.source, t.field, t.schema_field, t.format, t.timezone, t.max_future, t.max_age),
        "fields": {n: (m.source, m.scale, m.offset) for n, m in feed.fields.items()},
    }  # fmt: skip


def as_spec_holds_it(spec: FeedSpec) -> dict[str, Any]:
    t, d = spec.time, spec.device_id
    return {
        "name": spec.name, "topic": spec.topic, "format": spec.format,
        "csv": None if spec.csv is None else (spec.csv.columns, spec.csv.delimiter, spec.csv.header),
        "device_id": (d.source, d.field, d.schema_field),
        "time": (t.source, t.field, t.schema_field, t.format, t.timezone, t.max_future, t.max_age),
        "fields": {n: (m.source, m.scale, m.offset) for n, m in spec.fields.items()},
    }  # fmt: skip


@pytest.mark.parametrize(("partner", "feed"), EXAMPLE_FEEDS, ids=[f"{p}.{f.name}" for p, f in EXAMPLE_FEEDS])
def test_every_example_feed_reads_back_as_validated(partner: str, feed: Feed) -> None:
    assert as_spec_holds_it(feed.spec()) == as_model_reads_it(feed)


@pytest.mark.parametrize("config", NESTED_CSV_AND_CONVERTED, ids=lambda c: c["name"])
def test_nested_paths_csv_options_conversions_and_time_formats_read_back_as_validated(config: dict[str, Any]) -> None:
    feed = Feed.model_validate(config)
    assert as_spec_holds_it(feed.spec()) == as_model_reads_it(feed)


def test_time_formats_stay_the_enum_and_strftime_patterns_stay_text() -> None:
    weather, counts, _ = (Feed.model_validate(c).spec() for c in NESTED_CSV_AND_CONVERTED)
    assert weather.time.format is TimeFormat.epoch_ms
    assert counts.time.format == "%d/%m/%Y %H:%M:%S" and not isinstance(counts.time.format, TimeFormat)
    assert counts.format is PayloadFormat.csv


def test_a_config_stored_before_a_key_existed_takes_the_models_default() -> None:
    stored = Feed.model_validate(NESTED_CSV_AND_CONVERTED[0]).model_dump(mode="json", by_alias=True)
    del stored["time"]["schema_field"], stored["time"]["max_age"], stored["device_id"]["schema_field"]
    assert as_spec_holds_it(FeedSpec.from_config(stored)) == as_model_reads_it(Feed.model_validate(stored))


def test_an_unmapped_field_is_read_from_the_payload_field_of_its_own_name() -> None:
    spec = Feed.model_validate(NESTED_CSV_AND_CONVERTED[0]).spec()
    assert spec.mapping("wind") == FieldSpec("w.s")
    assert spec.mapping("humidity") == FieldSpec("humidity", 1.0, 0.0)
    assert dataclasses.replace(spec.time, max_age=timedelta(days=1)).max_age == timedelta(days=1)
