"""Drafting a connector config and its Avro schema from sample payloads (`hub connector init`): pure.

JSON samples are merged with `genson` (one JSON Schema for all of them: which keys every sample has,
which types each takes); the Avro schema and the config are ours. Each guess carries its evidence
for the review report ("obs.time: epoch milliseconds in 12 of 12 samples"):
- the leaves of nested objects become fields named by their path (`obs.wind.speed` -> `obs_wind_speed`),
  read with the config's path syntax; arrays are kept whole (a jsonb column);
- the device id: a field present in every sample, a string or integer, named like an id; none found:
  the id comes from the topic;
- the event time: a field present in every sample whose every value is an ISO 8601 time or an epoch
  number of one unit (s, ms, us), preferring time-like names; none found: the receive time;
- types: integer, number, boolean, string, and enum-like strings (few distinct values, often repeated);
  a field missing or null in some sample is optional (`["null", T]`, default null);
- units from names: `_f`/`_fahrenheit` is converted to Celsius, `_mph` to km/h (scale and offset).
Two equally good candidates for the device id or the time are not decided: `DraftError` lists them
with their evidence, and `choose` (the CLI's --device-id-field / --time-field) settles it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from genson import SchemaBuilder

from hub.connector.paths import Steps, flat_name, render_path
from hub.connector.samples import SampleError, Samples
from hub.schema.avro import COLUMN_NAME, RESERVED_COLUMNS

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EPOCH = ((1, "epoch_s", "seconds"), (1_000, "epoch_ms", "milliseconds"), (1_000_000, "epoch_us", "microseconds"))
_STRONG_TIME = {"time", "ts", "t", "timestamp", "datetime", "date_time", "event_time", "observed_at", "measured_at",
                "recorded_at", "sampled_at", "observation_time", "reading_time"}  # fmt: skip
_ID_WORDS = {"id", "uid", "uuid", "serial", "serial_number", "imei", "mac", "eui", "dev_eui", "deveui"}
_ID_OWNERS = ("sensor", "station", "node", "meter", "gauge", "charger", "unit", "counter", "logger")
FAHRENHEIT = (0.5555555555555556, -17.77777777777778)
MPH = 1.609344


class DraftError(SampleError):
    """The samples leave a guess open (two equally good candidates): the partner chooses."""


@dataclass
class Guess:
    subject: str
    verdict: str
    evidence: str
    note: str = ""


@dataclass
class DraftField:
    name: str
    source: str  # the path (or CSV column) it is read from
    avro_type: Any
    optional: bool
    scale: float = 1.0
    offset: float = 0.0


@dataclass
class Draft:
    format: str
    device: tuple[str, str] | None = None  # (path, schema field), None: from the topic
    time: tuple[str, str, str, str] | None = None  # (path, schema field, format, timezone), None: receive time
    fields: list[DraftField] = field(default_factory=list)
    guesses: list[Guess] = field(default_factory=list)
    avro_schema: dict[str, Any] | None = None  # format avro: the samples' own schema (maybe with a logicalType added)


@dataclass
class _Leaf:
    steps: Steps
    types: set[str]
    required: bool
    values: list[Any]  # present values, nulls included
    items: Any = None  # arrays: genson's schema of the items

    @property
    def path(self) -> str:
        return render_path(self.steps)


def draft(samples: Samples, *, device_field: str | None = None, time_field: str | None = None) -> Draft:
    """The draft for JSON or CSV `samples` (Avro: draft_avro.py); `device_field` / `time_field` (paths or
    columns) settle those guesses."""
    n = len(samples.records)
    leaves = _csv_leaves(samples) if samples.format == "csv" else _json_leaves(samples)
    if not any(leaf.required for leaf in leaves):
        raise SampleError(f"the {n} samples share no field: are they payloads of one feed? (draft from one kind)")
    out = Draft(samples.format)
    device = _choose(leaves, _device_rank, device_field, "device id", "--device-id-field", n)
    time = _choose(leaves, _time_rank, time_field, "event time", "--time-field", n)
    names: set[str] = set()
    if device is not None:
        name = _unique(_column(device.steps), names, "device_id")
        out.device = (device.path, name)
        distinct = len({str(v) for v in device.values})
        out.guesses.append(Guess(device.path, f"the device id (schema field {name})",
                                 f"{_kind(device.values)} in {len(device.values)} of {n} samples, {distinct} distinct, "
                                 "named like an id"))  # fmt: skip
    else:
        why = "no field present in every sample is a string or integer named like an id"
        out.guesses.append(Guess("device id", "from the topic level {device_id}", why))
    if time is not None:
        fmt, zone_note, evidence = _time_format(time.values)
        name = _unique(_column(time.steps), names, "time")
        out.time = (time.path, name, fmt, "UTC")
        out.guesses.append(Guess(time.path, f"the event time (schema field {name}, time.format {fmt})",
                                 f"{evidence} in {len(time.values)} of {n} samples", zone_note))  # fmt: skip
        out.guesses += _old_times(time.values, fmt)
    else:
        why = "no field present in every sample is an ISO 8601 time or an epoch number"
        out.guesses.append(Guess("event time", "the time the hub receives each message (time.source: received)", why))
    for leaf in leaves:
        if leaf is device or leaf is time:
            continue
        out.fields.append(_field(leaf, n, names, out.guesses, samples.format == "csv"))
    return out


# --------------------------------------------------------------------------- leaves


def _json_leaves(samples: Samples) -> list[_Leaf]:
    builder = SchemaBuilder()
    for record in samples.records:
        builder.add_object(record)
    leaves: list[_Leaf] = []
    _walk(builder.to_schema(), (), True, samples.records, leaves)
    return leaves


def _walk(node: dict[str, Any], steps: Steps, required: bool, records: list[Any], out: list[_Leaf]) -> None:
    if "anyOf" in node:
        kinds = sorted({t for branch in node["anyOf"] for t in _types(branch)})
        raise SampleError(
            f"{render_path(steps)!r} is {' in some samples, '.join(kinds)} in others: too inconsistent to draft "
            "from; leave out the samples that differ, or fix the device"
        )
    types = _types(node)
    if "object" in types:
        if types - {"object", "null"}:
            raise SampleError(f"{render_path(steps)!r} is an object in some samples and {_mixed(types)} in others: "
                              "too inconsistent to draft from")  # fmt: skip
        own = set(node.get("required", []))
        for key, child in node.get("properties", {}).items():
            sub = [r[key] for r in records if isinstance(r, dict) and key in r]
            _walk(child, (*steps, key), required and key in own and "null" not in types, sub, out)
        return
    if len(types - {"null"}) > 1:
        raise SampleError(f"{render_path(steps)!r} is {_mixed(types)} in different samples: too inconsistent to "
                          "draft from; leave out the samples that differ, or fix the device")  # fmt: skip
    out.append(_Leaf(steps, types, required and None not in records, records, node.get("items")))


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type", [])
    return set(t) if isinstance(t, list) else {t}


def _mixed(types: set[str]) -> str:
    return " and ".join(sorted(types - {"null"}))


def _csv_leaves(samples: Samples) -> list[_Leaf]:
    leaves = []
    for column in samples.columns:
        raw = [r[column] for r in samples.records]
        values: list[Any] = [_csv_value(v) for v in raw if v.strip()]
        types = {_json_type(v) for v in values}
        if types == {"integer", "number"}:
            values = [float(v) for v in values]
        elif len(types) > 1:
            values = [v.strip() for v in raw if v.strip()]
            types = {"string"}
        complete = len(values) == len(raw)
        leaves.append(_Leaf((column,), types | (set() if complete else {"null"}), complete, values))
    return leaves


def _csv_value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


# --------------------------------------------------------------------------- device id and time


def _device_rank(leaf: _Leaf, n: int) -> int:
    """0: not a candidate; higher: a better one."""
    if not leaf.required or len(leaf.values) < n or leaf.types - {"string", "integer"}:
        return 0
    if not all(_DEVICE_ID.fullmatch(str(v)) for v in leaf.values if not isinstance(v, bool)):
        return 0
    words = [str(s).lower() for s in leaf.steps if isinstance(s, str)]
    name = _snake("_".join(words))
    last = _snake(words[-1]) if words else ""
    if "device" in name:
        return 3
    if last in _ID_WORDS or any(name.endswith(f"{owner}_id") or last == owner for owner in _ID_OWNERS):
        return 2
    return 1 if name.endswith("_id") else 0


def _time_rank(leaf: _Leaf, n: int) -> int:
    if not leaf.required or len(leaf.values) < n or (_epoch_unit(leaf.values) is None and not _all_iso(leaf.values)):
        return 0
    last = _snake(str(leaf.steps[-1])) if leaf.steps else ""
    if last in _STRONG_TIME:
        return 3
    if last.endswith(("_at", "_time", "_ts", "time", "timestamp", "date")):
        return 2
    return 1 if _all_iso(leaf.values) else 0  # an unnamed number in an epoch range is no time yet


def _choose(leaves: list[_Leaf], rank: Any, chosen: str | None, what: str, option: str, n: int) -> _Leaf | None:
    if chosen is not None:
        for leaf in leaves:
            if chosen in (leaf.path, flat_name(leaf.steps)):
                if rank(leaf, n) == 0 and not (what == "device id" and leaf.required):
                    raise DraftError(f"{option} {chosen!r}: the samples' values there are no {what}")
                return leaf
        raise DraftError(f"{option} {chosen!r}: no such field in the samples ({', '.join(x.path for x in leaves)})")
    ranked = sorted(((rank(leaf, n), leaf) for leaf in leaves), key=lambda p: -p[0])
    best = [leaf for r, leaf in ranked if r and r == ranked[0][0]]
    if len(best) > 1:
        listed = "; ".join(f"{leaf.path} ({_kind(leaf.values)} in {len(leaf.values)} of {n} samples)" for leaf in best)
        raise DraftError(f"the {what} could be any of {len(best)} fields: {listed}; choose one with {option} PATH")
    return best[0] if best else None


def _all_iso(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, str) and ":" in v and _iso(v) is not None for v in values)


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _epoch_unit(values: list[Any]) -> tuple[int, str, str] | None:
    """The one epoch unit every value is a plausible time in (2001 to 2096), if any."""
    numbers = []
    for v in values:
        if isinstance(v, bool):
            return None
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                return None
        if not isinstance(v, int | float):
            return None
        numbers.append(v)
    for unit in _EPOCH:
        if numbers and all(1e9 * unit[0] <= x <= 4e9 * unit[0] for x in numbers):
            return unit
    return None


def _time_format(values: list[Any]) -> tuple[str, str, str]:
    """(time.format, a note, the evidence) of a time field's values."""
    unit = _epoch_unit(values)
    if unit is not None:
        return unit[1], "", f"epoch {unit[2]}"
    naive = sum(1 for v in values if (dt := _iso(v)) is not None and dt.tzinfo is None)
    note = (f"{naive} of them carry no UTC offset: they are read as UTC; set time.timezone if the devices send local "
            "time") if naive else ""  # fmt: skip
    return "iso8601", note, "ISO 8601 times" + (" with an offset" if not naive else "")


def _old_times(values: list[Any], fmt: str) -> list[Guess]:
    unit = {u[1]: u[0] for u in _EPOCH}.get(fmt)
    try:
        if unit is not None:
            newest = max(datetime.fromtimestamp(float(v) / unit, UTC) for v in values)
        else:
            newest = max(_aware(_iso(v)) for v in values)
    except (ValueError, OverflowError, OSError):
        return []
    age = datetime.now(UTC) - newest
    if age.days < 7:
        return []
    return [Guess("time.max_age", "kept at 7d", f"the newest sample time is {age.days} days old",
                  "messages older than time.max_age are refused (time_out_of_range): `hub try` refuses these "
                  "samples too; send fresh ones, or raise time.max_age")]  # fmt: skip


def _aware(dt: datetime | None) -> datetime:
    assert dt is not None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- fields


def _field(leaf: _Leaf, n: int, names: set[str], guesses: list[Guess], csv: bool) -> DraftField:
    present = len([v for v in leaf.values if v is not None])
    optional = not leaf.required or present < n
    base = _column(leaf.steps)
    kinds = leaf.types - {"null"}
    kind = next(iter(kinds)) if kinds else "null"
    scale, offset, unit = 1.0, 0.0, ""
    lowered = base.lower()
    if kind in ("integer", "number") and (lowered.endswith(("_f", "_fahrenheit")) or lowered == "fahrenheit"):
        scale, offset, unit = *FAHRENHEIT, "Fahrenheit"
        stem = re.sub(r"(_f|_fahrenheit)$", "", lowered)
        base = f"{stem}_c" if lowered != "fahrenheit" else "temperature_c"
    elif kind in ("integer", "number") and lowered.endswith("_mph"):
        scale, unit = MPH, "miles per hour"
        base = lowered.removesuffix("_mph") + "_kmh"
    name = _unique(base, names, None)
    avro_type, evidence = _avro_type(leaf, kind, name, csv)
    if unit:
        converted = "°C" if unit == "Fahrenheit" else "km/h"
        suffix = "_f" if unit == "Fahrenheit" else "_mph"
        guesses.append(Guess(leaf.path, f"{_type_text('double')} in {converted} as {name}, converted from {unit} "
                                        f"(scale {scale:.6g}, offset {offset:.6g})",
                             f"{evidence} in {present} of {n} samples; its name ({_column(leaf.steps)}) ends in "
                             f"{suffix!r}", "remove scale and offset to keep the unit as sent"))  # fmt: skip
        return DraftField(name, leaf.path, ["null", "double"] if optional else "double", optional, scale, offset)
    if name != flat_name(leaf.steps):
        guesses.append(Guess(leaf.path, f"schema field {name}", "column names are lower-case letters, digits and _"))
    if avro_type is not None:
        guesses.append(Guess(leaf.path, _type_text(avro_type) + (", optional" if optional else ""),
                             f"{evidence} in {present} of {n} samples"
                             + (f"; missing or null in {n - present}" if optional else "")))  # fmt: skip
    else:
        avro_type = "string"
        guesses.append(Guess(leaf.path, "optional string", f"null in all {n} samples: its type cannot be told",
                             "set its real type in the schema"))  # fmt: skip
        optional = True
    return DraftField(name, leaf.path, ["null", avro_type] if optional else avro_type, optional, scale, offset)


def _avro_type(leaf: _Leaf, kind: str, name: str, csv: bool) -> tuple[Any, str]:
    values = [v for v in leaf.values if v is not None]
    if kind == "boolean":
        return "boolean", "true or false"
    if kind == "integer":
        return "long", "whole numbers"
    if kind == "number":
        return "double", "numbers"
    if kind == "array":
        return {"type": "array", "items": _json_schema_type(leaf.items, name)}, "an array (kept whole: a jsonb column)"
    if kind != "string":
        return None, ""
    distinct = Counter(values)
    if (
        4 <= len(values)
        and 2 <= len(distinct) <= 8
        and len(distinct) * 2 <= len(values)
        and all(isinstance(v, str) and _AVRO_NAME.fullmatch(v) for v in distinct)
    ):
        symbols = sorted(distinct)
        enum = {"type": "enum", "name": _camel(name), "symbols": symbols}
        return enum, f"{len(distinct)} distinct values ({', '.join(symbols)})"
    return "string", "text"


def _json_schema_type(node: Any, name: str) -> Any:
    """An Avro type for genson's schema of array items."""
    if not isinstance(node, dict):
        return "string"
    types = _types(node) - {"null"}
    kind = next(iter(types)) if len(types) == 1 else "string"
    if kind == "object":
        fields = []
        for key, child in node.get("properties", {}).items():
            t = _json_schema_type(child, f"{name}_{key}")
            required = key in node.get("required", []) and "null" not in _types(child)
            fields.append({"name": key, "type": t} if required else {"name": key, "type": ["null", t], "default": None})
        return {"type": "record", "name": _camel(name) + "Item", "fields": fields}
    if kind == "array":
        return {"type": "array", "items": _json_schema_type(node.get("items"), name)}
    return {"integer": "long", "number": "double", "boolean": "boolean"}.get(kind, "string")


def _type_text(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        return "enum" if avro_type["type"] == "enum" else f"{avro_type['type']} (jsonb)"
    return {"long": "integer (long)", "double": "number (double)"}.get(str(avro_type), str(avro_type))


def _kind(values: list[Any]) -> str:
    kinds = {_json_type(v) for v in values if v is not None}
    return {"string": "a string", "integer": "an integer", "number": "a number"}.get(next(iter(kinds)), "a value") \
        if len(kinds) == 1 else "values"  # fmt: skip


# --------------------------------------------------------------------------- names


def _snake(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", text.lower())).strip("_")


def _column(steps: Steps) -> str:
    name = _snake(flat_name(steps)) or "field"
    if not name[0].isalpha():
        name = f"f_{name}"
    return name[:63]


def _unique(name: str, taken: set[str], key: str | None) -> str:
    """`name`, made free of the taken names, the reserved columns, and the other key field's hub name."""
    reserved = set(RESERVED_COLUMNS) | ({"device_id", "time"} - {key} if key else {"device_id", "time"})
    candidate, i = name, 2
    while candidate in taken or candidate in reserved or not COLUMN_NAME.fullmatch(candidate):
        candidate = f"{name[:60]}_{i}"
        i += 1
    taken.add(candidate)
    return candidate


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Record"
