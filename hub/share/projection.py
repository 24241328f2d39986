"""A feed record as one stream may show it: the same limits as the consumer's SQL view (hub/control/share_sql.py).

Pure. A `Projector` is made per stream and current feed schema: the projected Avro schema (the
device id or its pseudonym, the time, then the granted fields, in the view's column order), and
`project`, which applies the clause's device list and fields to one decoded record. Pseudonyms are
HMAC-SHA256 of the device id under the agreement's key, hex: the value the view computes with
sha256(opad || sha256(ipad || id)). A record that cannot show every granted field (a schema
version without one) raises `NotProjectable`; the worker dead-letters it naming the agreement.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from hub.agreement import names
from hub.agreement.streams import Stream
from hub.schema.avro import FeedSchema
from hub.schema.slices import Scanner, avro_string
from hub.schema.timestamps import top_level_time_units

DEVICE_ID = "device_id"
TIME = "time"
AVRO_MS = {"type": "long", "logicalType": "timestamp-millis"}


class NotProjectable(ValueError):
    """A record this stream cannot show as its grant says (the reason in words)."""


CACHED_DEVICES = 100_000  # per projector, then forgotten


class Splice(NamedTuple):
    """A stream's Avro record made of the bytes of a feed record's own fields (`Projector.splice`)."""

    device: int  # the writer's field index of device_id
    rest: tuple[int, ...]  # the writer's field indexes of the fields after the key (time, then the granted ones)


def pseudonym(key: bytes, device_id: str) -> str:
    return hmac.new(key, device_id.encode("utf-8"), hashlib.sha256).hexdigest()


def escape_level(value: str) -> str:
    """A device id as one MQTT topic level: `/`, `+`, `#`, `%` and control characters percent-encoded."""
    out = []
    for ch in value:
        if ch in "/+#%" or ord(ch) < 0x20 or ch == "\x7f":
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out) or "%00"


def _avro_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in text)


_second: list[tuple[int | None, str]] = [(None, "")]  # the last whole second iso_ms formatted, and its text


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds (`2026-11-27T10:00:00.123Z`).

    Records come in time order, many within one second: its text is kept for the next.
    """
    seconds, ms = divmod(epoch_ms, 1000)
    last = _second[0]
    if last[0] != seconds:
        last = _second[0] = (seconds, datetime.fromtimestamp(seconds, UTC).isoformat().removesuffix("+00:00"))
    return f"{last[1]}.{ms:03d}Z"


@dataclass
class Projector:
    stream: Stream
    schema: FeedSchema  # the feed's current schema: granted fields take their types from it
    key: bytes | None = None  # the agreement's pseudonym key (pseudonymised clauses only)
    avro: dict[str, Any] = field(init=False)
    key_field: str = field(init=False)
    fields: tuple[str, ...] = field(init=False)
    _time_fields: dict[str, int] = field(init=False)  # granted fields that are timestamps: units per second
    _types: dict[str, Any] = field(init=False)  # the granted fields' Avro types (canonical form)
    # Per device id, what the patterns and the HMAC said (the same few thousand devices send again and again).
    _admitted: dict[str, bool] = field(init=False, default_factory=dict)
    _pseudonyms: dict[str, str] = field(init=False, default_factory=dict)
    _keys: dict[str, tuple[bytes, bytes]] = field(init=False, default_factory=dict)
    _topics: dict[str, str] = field(init=False, default_factory=dict)  # MQTT topics by key value

    def __post_init__(self) -> None:
        c = self.stream.clause
        if c.pseudonymise and self.key is None:
            raise NotProjectable(f"agreement {c.agreement} has no pseudonym key (revoked?)")
        feed_fields = {f["name"]: f for f in json.loads(self.schema.canonical)["fields"]}
        missing = [f for f in c.fields if f not in feed_fields]
        if missing:
            raise NotProjectable(f"the current schema of {c.feed_key} has no field {', '.join(missing)}")
        self.key_field = names.PSEUDONYM_COLUMN if c.pseudonymise else DEVICE_ID
        self.fields = c.fields
        units = top_level_time_units(self.schema.parsed)
        self._time_fields = {f: units[f] for f in c.fields if f in units}
        self._types = {f: feed_fields[f]["type"] for f in c.fields}
        out_fields: list[dict[str, Any]] = [{"name": self.key_field, "type": "string"}, {"name": TIME, "type": AVRO_MS}]
        for name in c.fields:
            spec = {k: v for k, v in feed_fields[name].items() if k in ("name", "type", "default", "doc")}
            out_fields.append(spec)
        self.avro = {
            "type": "record",
            "name": _avro_name(f"{c.provider}__{c.feed}"),
            "namespace": f"hub.share.{self.stream.consumer}",
            "doc": f"{c.feed_key} as agreement {c.agreement} shares it with {self.stream.consumer} (grants[{c.index}])",
            "fields": out_fields,
        }

    def admits(self, device_id: str) -> bool:
        admitted = self._admitted.get(device_id)
        if admitted is None:
            if len(self._admitted) >= CACHED_DEVICES:
                self._admitted.clear()
            admitted = self._admitted[device_id] = self.stream.clause.device_allowed(device_id)
        return admitted

    def _pseudonym(self, device_id: str) -> str:
        assert self.key is not None
        found = self._pseudonyms.get(device_id)
        if found is None:
            if len(self._pseudonyms) >= CACHED_DEVICES:
                self._pseudonyms.clear()
            found = self._pseudonyms[device_id] = pseudonym(self.key, device_id)
        return found

    def project(self, record: dict[str, Any], writer_units: dict[str, int]) -> dict[str, Any]:
        """The projected record (times as epoch milliseconds) of a record decoded with its writer's schema
        (timestamps as plain ints in `writer_units`); the caller checked `admits` and the delay."""
        device = record[DEVICE_ID]
        out: dict[str, Any] = {
            self.key_field: self._pseudonym(device) if self.key is not None else device,
            TIME: to_ms(record[TIME], writer_units.get(TIME, 1000)),
        }
        for name in self.fields:
            if name not in record:
                raise NotProjectable(
                    f"the record's schema version has no field {name!r}, which agreement "
                    f"{self.stream.agreement.id} grants"
                )
            value = record[name]
            if name in self._time_fields and isinstance(value, int):
                value = value * self._time_fields[name] // writer_units.get(name, self._time_fields[name])
            out[name] = value
        return out

    def splice(self, writer: FeedSchema, scanner: Scanner) -> Splice | None:
        """How `project` + the stream's encoder's body come out of a record of `writer` without decoding it.

        That is when the writer has device_id as a string, time in milliseconds, and every granted
        field with the very type the stream's schema gives it, each a type whose values encode to
        the bytes they were read from (`_splices_as_is`). Then the stream's body is the key (the
        device id, or its pseudonym: `key_bytes`) followed by the bytes of the writer's `rest`
        fields. None: decode and project the record.
        """
        types = {f["name"]: f["type"] for f in json.loads(writer.canonical)["fields"]}
        if types.get(DEVICE_ID) != "string" or types.get(TIME) != AVRO_MS or TIME not in scanner.index:
            return None
        rest = [scanner.index[TIME]]
        for name in self.fields:
            wanted = self._types[name]
            if name not in scanner.index or types.get(name) != wanted:
                return None
            if not _splices_as_is(wanted):
                return None
            rest.append(scanner.index[name])
        return Splice(scanner.index[DEVICE_ID], tuple(rest))

    def key_bytes(self, device: str) -> tuple[bytes, bytes]:
        """A pseudonymised stream's (Kafka key, Avro encoding of the key field) for a device."""
        found = self._keys.get(device)
        if found is None:
            if len(self._keys) >= CACHED_DEVICES:
                self._keys.clear()
            name = self._pseudonym(device)
            found = self._keys[device] = (name.encode(), avro_string(name))
        return found

    def json(self, projected: dict[str, Any]) -> bytes:
        """The MQTT payload: the projected record as JSON, times as ISO 8601 UTC."""
        doc = dict(projected)
        doc[TIME] = iso_ms(projected[TIME])
        for name, unit in self._time_fields.items():
            if isinstance(doc.get(name), int):
                doc[name] = iso_ms(doc[name] * 1000 // unit)
        return _to_json(doc).encode()

    def mqtt_topic(self, projected: dict[str, Any]) -> str:
        key = str(projected[self.key_field])
        found = self._topics.get(key)
        if found is None:
            if len(self._topics) >= CACHED_DEVICES:
                self._topics.clear()
            found = self._topics[key] = f"{self.stream.mqtt_prefix}/{escape_level(key)}"
        return found


_AS_READ = {None, "timestamp-millis", "timestamp-micros"}  # logical types read as the plain longs they are


def _splices_as_is(avro_type: Any) -> bool:
    """Whether a value of this type, decoded and encoded again, gives back the bytes it was read from.

    So for primitives, enums and fixed, and a union of null and one of them (its branch is never in
    doubt); not for other logical types (a uuid's text comes back lower-case, a decimal's bytes
    minimal), which are decoded and encoded as before.
    """
    if isinstance(avro_type, list):
        return len(avro_type) == 2 and "null" in avro_type and all(_splices_as_is(b) for b in avro_type)
    if isinstance(avro_type, dict):
        return avro_type.get("logicalType") in _AS_READ and avro_type.get("type") not in ("record", "array", "map")
    return True


def to_ms(value: int, unit: int) -> int:
    return value if unit == 1000 else value * 1000 // unit


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


# json.dumps(doc, default=_json_default, allow_nan=False, separators=(",", ":")) without an encoder per call.
_to_json = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":")).encode


# --- aggregates --------------------------------------------------------------------------------------


def aggregate_schema(stream: Stream) -> dict[str, Any]:
    """One closed window of the consumer's aggregate view: bucket, devices, samples, avg/min/max per field."""
    c = stream.clause
    fields: list[dict[str, Any]] = [
        {"name": "bucket", "type": AVRO_MS},
        {"name": "devices", "type": "long"},
        {"name": "samples", "type": "long"},
    ]
    for name in c.fields:
        for prefix in ("avg_", "min_", "max_"):
            fields.append({"name": prefix + name, "type": ["null", "double"], "default": None})
    return {
        "type": "record",
        "name": _avro_name(f"{c.provider}__{c.feed}__agg"),
        "namespace": f"hub.share.{stream.consumer}",
        "doc": f"{c.feed_key} aggregates as agreement {c.agreement} shares them with {stream.consumer} "
        f"(grants[{c.index}])",
        "fields": fields,
    }


def aggregate_record(stream: Stream, row: dict[str, Any]) -> dict[str, Any]:
    """A row of the aggregate view as an Avro record (bucket as epoch milliseconds)."""
    bucket: datetime = row["bucket"]
    out: dict[str, Any] = {
        "bucket": int(bucket.timestamp() * 1000),
        "devices": int(row["devices"]),
        "samples": int(row["samples"]),
    }
    for name in stream.clause.fields:
        for prefix in ("avg_", "min_", "max_"):
            v = row.get(prefix + name)
            out[prefix + name] = None if v is None else float(v)
    return out


def aggregate_json(record: dict[str, Any]) -> bytes:
    doc = dict(record)
    doc["bucket"] = iso_ms(record["bucket"])
    return _to_json(doc).encode()
