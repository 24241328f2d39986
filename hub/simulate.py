"""Simulated partner devices: realistic messages for every applied feed, published with the partner's own login.

Values are drawn in the schema's terms and then written the way the feed's devices
write them: its payload format, field names, units and time format (the connector
config's mapping inverted), so what arrives exercises the whole ingest path.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from fastavro import schemaless_writer
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.catalog.runtime import FeedRuntime
from hub.connector.feed_spec import PayloadFormat, TimeFormat
from hub.connector.paths import parse_path
from hub.control import credentials
from hub.errors import HubError
from hub.schema.avro import Column
from hub.settings import MqttAddress

# Plausible ranges by field-name fragment; anything else numeric draws from 0-100.
RANGES: list[tuple[str, tuple[float, float]]] = [
    ("pm25", (2, 40)), ("pm10", (5, 70)), ("no2", (5, 90)), ("temperature", (-5, 32)), ("humidity", (25, 98)),
    ("battery", (3.3, 4.2)), ("heavy", (0, 6)), ("vehicles", (0, 45)), ("lane", (1, 4)), ("speed", (15, 65)),
    ("occupied", (0, 480)), ("capacity", (500, 500)), ("laeq", (42, 82)), ("lamax", (60, 98)), ("interval", (60, 60)),
    ("power", (0, 150)), ("energy", (0, 60)), ("connector", (1, 2)),
]  # fmt: skip


def _range(name: str) -> tuple[float, float]:
    for frag, rng in RANGES:
        if frag in name:
            return rng
    return (0, 100)


@dataclass
class FeedSimulator:
    feed: FeedRuntime
    namespace: str
    devices: int
    rng: random.Random
    _last_ms: dict[str, int] = field(default_factory=dict)

    def device_ids(self) -> list[str]:
        return [f"{self.feed.row.name[:3]}-{i:04d}" for i in range(self.devices)]

    def _value(self, col: Column, avro_type: Any) -> Any:
        t = avro_type
        if isinstance(t, list):
            t = next(x for x in t if x != "null")
        if isinstance(t, dict) and t.get("type") == "enum":
            return self.rng.choice(t["symbols"])
        base = t if isinstance(t, str) else t.get("type")
        if base in ("int", "long"):
            lo, hi = _range(col.name)
            return self.rng.randint(int(lo), int(hi))
        if base in ("float", "double"):
            lo, hi = _range(col.name)
            return round(self.rng.uniform(lo, hi), 2)
        if base == "boolean":
            return self.rng.random() < 0.5
        if base == "string":
            return self.rng.choice(["ok", "north", "south", "east", "west"])
        return None

    def record(self, device: str, now_ms: int) -> dict[str, Any]:
        t = max(now_ms, self._last_ms.get(device, 0) + 1)  # (device, time) is a row's identity
        self._last_ms[device] = t
        rec: dict[str, Any] = {"device_id": device, "time": t}
        types = {f["name"]: f["type"] for f in self.feed.schema.parsed["fields"]}
        for col in self.feed.schema.columns:
            if col.name not in rec:
                rec[col.name] = self._value(col, types[col.name])
        return rec

    def _time_out(self, ms: int) -> Any:
        tf = self.feed.feed.time
        fmt = tf.format
        if fmt == TimeFormat.epoch_ms:
            return ms
        if fmt == TimeFormat.epoch_s:
            return ms / 1000
        if fmt == TimeFormat.epoch_us:
            return ms * 1000
        dt = datetime.fromtimestamp(ms / 1000, UTC)
        if fmt == TimeFormat.iso8601:
            if tf.timezone == "UTC":
                return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            return dt.astimezone(ZoneInfo(tf.timezone)).replace(tzinfo=None).isoformat(timespec="milliseconds")
        return dt.astimezone(ZoneInfo(tf.timezone)).strftime(str(fmt))

    def to_source_fields(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The record as the device writes it: its own field names, units and time format."""
        f = self.feed.feed
        out: dict[str, Any] = {}
        put = _put_flat if f.format == PayloadFormat.csv else _put_at_path
        if f.device_id.source == "field" and f.device_id.field:
            put(out, f.device_id.field, rec["device_id"])
        if f.time.source == "field" and f.time.field:
            put(out, f.time.field, self._time_out(rec["time"]))
        for name, value in rec.items():
            if name in ("device_id", "time"):
                continue
            m = f.mapping(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and (m.scale != 1 or m.offset != 0):
                value = round((value - m.offset) / m.scale, 4)
            put(out, m.source, value)
        return out

    def topic(self, device: str) -> str:
        levels = self.feed.feed.topic.replace("{device_id}", device)
        return f"{self.namespace}/{self.feed.row.partner_id}/{levels}"

    def payload(self, rec: dict[str, Any]) -> bytes:
        fmt = self.feed.feed.format
        if fmt == PayloadFormat.avro:
            buf = io.BytesIO()
            schemaless_writer(buf, self.feed.schema.parsed, rec)
            return buf.getvalue()
        fields = self.to_source_fields(rec)
        if fmt == PayloadFormat.csv:
            assert self.feed.feed.csv is not None
            cols = self.feed.feed.csv.columns
            return self.feed.feed.csv.delimiter.join(
                "" if fields.get(c) is None else str(fields[c]) for c in cols
            ).encode()
        return json.dumps(fields).encode()

    def invalid_payload(self, rec: dict[str, Any]) -> tuple[bytes, str]:
        """A message the hub must refuse, and the reason it should give."""
        fmt = self.feed.feed.format
        kind = self.rng.choice(["not_decodable", "wrong_type", "time_out_of_range"])
        if kind == "not_decodable" or fmt == PayloadFormat.avro:
            return (b"\xff\x00garbage" if fmt == PayloadFormat.avro else b'{"truncated": '), "not_decodable"
        if kind == "time_out_of_range":
            rec = {**rec, "time": rec["time"] - 400 * 86400 * 1000}
            return self.payload(rec), "time_out_of_range"
        numeric = [c.name for c in self.feed.schema.columns if c.numeric and c.name != "time"]
        if not numeric:
            return b'{"truncated": ', "not_decodable"
        fields = self.to_source_fields(rec)
        fields[self.feed.feed.mapping(numeric[0]).source] = "n/a"
        if fmt == PayloadFormat.csv:
            assert self.feed.feed.csv is not None
            cols = self.feed.feed.csv.columns
            return ",".join("" if fields.get(c) is None else str(fields[c]) for c in cols).encode(), "wrong_type"
        return json.dumps(fields).encode(), "wrong_type"


@dataclass
class SimulationReport:
    sent: Counter[str] = field(default_factory=Counter)  # feed -> messages
    invalid: Counter[str] = field(default_factory=Counter)  # expected reason -> messages
    acked: int = 0
    refused: int = 0
    seconds: float = 0.0
    publish_ms: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


class Publisher:
    """One MQTT client per partner (its login is bound to the client id equal to its user name, so one
    connection per login); counts PUBACKs and refusals (MQTT v5 reason codes)."""

    def __init__(self, address: MqttAddress, username: str, password: str, protocol: MQTTProtocolVersion) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=protocol)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.acked = 0
        self.refused = 0
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.refusal: str | None = None
        self.client.on_connect = self._on_connect
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()
        if not self.connected.wait(10) or self.refusal:
            self.close()
            raise HubError(
                f"simulated partner {username} could not connect to {address.host}:{address.port}: "
                f"{self.refusal or 'no answer'}; issue new credentials with `hub partners rotate-credentials`"
            )

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.refusal = str(reason)
        self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.lock:
            if getattr(reason, "is_failure", False):
                self.refused += 1
            else:
                self.acked += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _put_flat(out: dict[str, Any], reference: str, value: Any) -> None:
    out[reference] = value


def _put_at_path(out: dict[str, Any], reference: str, value: Any) -> None:
    """Set `value` at a payload path (hub.connector.paths), making the objects and arrays on the way."""
    steps = parse_path(reference)
    node: Any = out
    for step, after in zip(steps, (*steps[1:], None), strict=True):
        fresh: Any = value if after is None else ([] if isinstance(after, int) else {})
        if isinstance(step, int):
            while len(node) <= step:
                node.append({} if not isinstance(after, int) else [])
            if after is None:
                node[step] = value
            node = node[step]
        else:
            if after is None:
                node[step] = value
            node = node.setdefault(step, fresh)


def simulate(
    feeds: list[FeedRuntime],
    address: MqttAddress,
    credentials_dir: Path,
    *,
    namespace: str,
    messages: int,
    rate: float,
    devices: int = 100,
    invalid_fraction: float = 0.0,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    seed: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
) -> SimulationReport:
    """Publish `messages` in total, round-robin over feeds and their devices, at `rate` msg/s (0 = flat out).

    `progress(what, done, total)` is told how many are published and acknowledged, every few hundred.
    """
    if not feeds:
        raise HubError("no feeds are applied: run `hub apply connectors/` first")
    rng = random.Random(seed)
    sims = [FeedSimulator(f, namespace, devices, rng) for f in feeds]
    publishers: dict[str, Publisher] = {}
    for f in feeds:
        pid = f.row.partner_id
        if pid not in publishers:
            creds = credentials.load(credentials_dir, pid)
            publishers[pid] = Publisher(address, creds["username"], creds["password"], protocol)
    report = SimulationReport()
    ids = [s.device_ids() for s in sims]
    start = time.monotonic()
    for i in range(messages):
        if rate > 0:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        k = i % len(sims)
        sim = sims[k]
        device = ids[k][(i // len(sims)) % devices]
        rec = sim.record(device, int(time.time() * 1000))
        if invalid_fraction and rng.random() < invalid_fraction:
            payload, reason = sim.invalid_payload(rec)
            report.invalid[reason] += 1
        else:
            payload = sim.payload(rec)
        pub = publishers[sim.feed.row.partner_id]
        pub.client.publish(sim.topic(device), payload, qos=1)
        report.sent[f"{sim.feed.row.partner_id}.{sim.feed.row.name}"] += 1
        if progress is not None and (i % 200 == 199 or i == messages - 1):
            progress("published", i + 1, messages)
            progress("acknowledged by the broker", sum(p.acked + p.refused for p in publishers.values()), messages)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answered = sum(p.acked + p.refused for p in publishers.values())
        if progress is not None:
            progress("acknowledged by the broker", answered, messages)
        if answered >= messages:
            break
        time.sleep(0.05)
    report.seconds = time.monotonic() - start
    report.acked = sum(p.acked for p in publishers.values())
    report.refused = sum(p.refused for p in publishers.values())
    for p in publishers.values():
        p.close()
    return report
