"""An applied feed as the data plane reads it: plain frozen dataclasses, no validation library.

`hub apply` validates a partner's file with the pydantic models (model.py) and stores each feed's
config as `Feed.model_dump(mode="json", by_alias=True)`; workers read it back with `FeedSpec.from_config`.
They never validate it again, so they do not load pydantic, which would cost each ingest and landing
worker about 12 MB of resident memory (issue 18). The CLI reads a `Feed` the same way
(`Feed.spec()`), so what `hub try` decodes is what a worker decodes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from hub.schema.avro import DEVICE_ID, TIME


class PayloadFormat(StrEnum):
    json = "json"
    avro = "avro"  # Avro binary body written with the feed's current schema
    csv = "csv"  # one line of comma-separated values


class TimeFormat(StrEnum):
    iso8601 = "iso8601"
    epoch_s = "epoch_s"
    epoch_ms = "epoch_ms"
    epoch_us = "epoch_us"


# The defaults of a feed's `time:` (the model's too), for configs stored before a key existed.
DEFAULT_TIME_FIELD = "time"
DEFAULT_MAX_FUTURE = timedelta(minutes=5)
DEFAULT_MAX_AGE = timedelta(days=7)

_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | int) -> timedelta:
    """'30d', '12h', '15m', '45s', '2w' (or plain seconds) as a timedelta."""
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration: write a whole number and a unit, e.g. 30d, 12h, 15m, 45s")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class FieldSpec:
    source: str
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class CsvSpec:
    columns: tuple[str, ...]
    delimiter: str = ","
    header: bool = True


@dataclass(frozen=True)
class DeviceIdSpec:
    source: str = "topic"  # or "field"
    field: str | None = None
    schema_field: str = DEVICE_ID


@dataclass(frozen=True)
class EventTimeSpec:
    source: str = "field"  # or "received"
    field: str | None = DEFAULT_TIME_FIELD
    schema_field: str = TIME
    format: TimeFormat | str = TimeFormat.iso8601  # or a strftime pattern
    timezone: str = "UTC"
    max_future: timedelta = DEFAULT_MAX_FUTURE
    max_age: timedelta = DEFAULT_MAX_AGE


@dataclass(frozen=True)
class FeedSpec:
    name: str
    topic: str  # inside the partner's namespace, with a {device_id} level or not
    format: PayloadFormat = PayloadFormat.json
    csv: CsvSpec | None = None
    device_id: DeviceIdSpec = DeviceIdSpec()
    time: EventTimeSpec = EventTimeSpec()
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)

    def mapping(self, schema_field: str) -> FieldSpec:
        found = self.fields.get(schema_field)
        return found if found is not None else FieldSpec(source=schema_field)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeedSpec:
        """The stored config of a validated feed (its JSON dump); keys a config stored earlier lacks take defaults."""
        csv = config.get("csv")
        device = config.get("device_id") or {}
        when = config.get("time") or {}
        fmt = when.get("format", TimeFormat.iso8601)
        return cls(
            name=config["name"],
            topic=config["topic"],
            format=PayloadFormat(config.get("format", PayloadFormat.json)),
            csv=CsvSpec(tuple(csv["columns"]), csv.get("delimiter", ","), csv.get("header", True)) if csv else None,
            device_id=DeviceIdSpec(
                source=device.get("source", "topic"),
                field=device.get("field"),
                schema_field=device.get("schema_field", DEVICE_ID),
            ),
            time=EventTimeSpec(
                source=when.get("source", "field"),
                field=when.get("field", DEFAULT_TIME_FIELD),
                schema_field=when.get("schema_field", TIME),
                format=TimeFormat(fmt) if fmt in TimeFormat.__members__.values() else fmt,
                timezone=when.get("timezone", "UTC"),
                max_future=parse_duration(when["max_future"]) if "max_future" in when else DEFAULT_MAX_FUTURE,
                max_age=parse_duration(when["max_age"]) if "max_age" in when else DEFAULT_MAX_AGE,
            ),
            fields={
                name: FieldSpec(m["source"], float(m.get("scale", 1.0)), float(m.get("offset", 0.0)))
                for name, m in (config.get("fields") or {}).items()
            },
        )
