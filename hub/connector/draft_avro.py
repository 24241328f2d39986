"""Drafting from Avro samples: the devices' own schema is the feed's schema; find its device id and time fields."""

from __future__ import annotations

import copy
import re
from typing import Any

from hub.connector.draft import Draft, DraftError, Guess
from hub.connector.samples import Samples
from hub.schema.avro import TIME_LOGICAL_TYPES

_ID_WORDS = {"device", "id", "serial", "imei", "mac", "sensor", "station", "node"}
_TIME_WORDS = {"time", "ts", "timestamp", "at", "date", "datetime"}


def draft_avro(samples: Samples, *, device_field: str | None = None, time_field: str | None = None) -> Draft:
    assert samples.avro_schema is not None
    schema = copy.deepcopy(samples.avro_schema)
    fields: list[dict[str, Any]] = schema["fields"]
    n = len(samples.records)
    out = Draft("avro", avro_schema=schema)
    strings = [f for f in fields if f["type"] == "string"]
    device = _pick(strings, device_field, lambda f: bool(_words(f["name"]) & _ID_WORDS), "device id",
                   "--device-id-field")  # fmt: skip
    if device is not None:
        out.device = (device["name"], device["name"])
        out.guesses.append(
            Guess(device["name"], "the device id", f"a string field of the samples' schema, in {n} samples")
        )
    else:
        out.guesses.append(Guess("device id", "from the topic level {device_id}", "no string field named like an id"))
    longs = [f for f in fields if _long(f["type"])]
    time = _pick(longs, time_field, lambda f: _timestamp(f["type"]) or bool(_words(f["name"]) & _TIME_WORDS),
                 "event time", "--time-field")  # fmt: skip
    if time is None:
        raise DraftError("no field of the samples' Avro schema is a long timestamp (timestamp-millis): the hub needs "
                         "the event time in Avro payloads; add one, or choose one with --time-field")  # fmt: skip
    out.time = (time["name"], time["name"], "epoch_ms", "UTC")
    if _timestamp(time["type"]):
        out.guesses.append(Guess(time["name"], "the event time", f"a {time['type']['logicalType']} field"))
    else:
        time["type"] = {"type": "long", "logicalType": "timestamp-millis"}
        out.guesses.append(Guess(time["name"], "the event time", "a long named like a time",
                                 "logicalType timestamp-millis added to it in the schema (the bytes stay the same): "
                                 "check that it is epoch milliseconds"))  # fmt: skip
    for f in fields:
        if f is not device and f is not time:
            out.guesses.append(Guess(f["name"], "kept as the devices' schema has it", "a field of the samples' schema"))
    return out


def _pick(
    fields: list[dict[str, Any]], chosen: str | None, named: Any, what: str, option: str
) -> dict[str, Any] | None:
    if chosen is not None:
        found = next((f for f in fields if f["name"] == chosen), None)
        if found is None:
            raise DraftError(
                f"{option} {chosen!r}: no such field of the right type ({', '.join(f['name'] for f in fields)})"
            )
        return found
    candidates = [f for f in fields if named(f)]
    if len(candidates) > 1:
        listed = ", ".join(f["name"] for f in candidates)
        raise DraftError(f"the {what} could be any of {listed}; choose one with {option} NAME")
    return candidates[0] if candidates else None


def _words(name: str) -> set[str]:
    return set(re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().split("_"))


def _long(t: Any) -> bool:
    return t == "long" or (isinstance(t, dict) and t.get("type") == "long")


def _timestamp(t: Any) -> bool:
    return isinstance(t, dict) and t.get("logicalType") in TIME_LOGICAL_TYPES
