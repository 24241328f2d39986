"""What ingest sends to Kafka for each MQTT message: a feed record, or a dead letter with its reason.

`Preparer.prepare_all` is the per-message hot path: route the MQTT topic to its feed, decode,
map and validate the payload, encode it in the Confluent wire format, and key it by device
id on the partition the Java client would pick. A message no feed takes, or one that fails
decoding or validation, becomes a record for the dead-letter topic instead, and its partner
gets an error report over MQTT (rate-limited per partner). A CSV header line is neither: it is
acknowledged and counted (`header_line`), and nothing is sent for it. A message the MQTT broker
delivered again (DUP flag) carries a `redelivery` header, so landing can tell the hub's own copies
from a device's duplicates.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

from hub import dead_letters
from hub.dead_letters import DEVICE, MQTT_TOPIC, RECEIVED_MS, REDELIVERY
from hub.error_reports import ErrorReports, report_payload, report_topic
from hub.errors import PayloadError
from hub.ingest.mqtt_source import Message
from hub.ingest.routes import Router
from hub.settings import HubSettings

__all__ = ["UNKNOWN", "ErrorReports", "Outgoing", "Preparer", "Stats", "mark_resent", "partition_for"]

UNKNOWN = "_unknown"
HEADER_LINE = "header_line"  # PayloadError code of a CSV header line: skipped, acknowledged, counted
_MQTT_REDELIVERY = (REDELIVERY, b"mqtt")
_RESEND = (REDELIVERY, b"resend")


@functools.lru_cache(maxsize=200_000)
def _key_hash(key: bytes) -> int:
    # aiokafka's murmur2 is pure Python (~5% of an ingest worker's time); devices repeat their keys.
    return int(murmur2(key) & 0x7FFFFFFF)


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner, so every Kafka tool agrees on where a device's records live."""
    return _key_hash(key) % partitions


@dataclass(slots=True)  # tens of thousands wait for their acknowledgement at once: no __dict__ each
class Outgoing:
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    refused: tuple[str, str, str] | None = None  # a dead letter's (partner, feed, reason), counted when acknowledged
    offset: int = -1  # the record's Kafka offset once the broker acknowledged it


def mark_resent(outgoing: list[Outgoing]) -> None:
    """Records about to be sent again: landing counts a copy of one that was landed as the hub's own."""
    for o in outgoing:
        if not any(name == REDELIVERY for name, _ in o.headers):
            o.headers.append(_RESEND)


@dataclass
class Stats:
    """What this worker saw (in memory; the durable counts are written with each acknowledgement)."""

    devices: set[tuple[str, str, str]] = field(default_factory=set)  # (partner, feed, device) seen since the last flush
    # Messages acknowledged without a record, by (partner, feed, reason): the worker takes them per
    # batch and records them with the batch's acknowledgement (dead letters are counted from `Outgoing`).
    counters: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    accepted: int = 0
    rejected: int = 0


class Preparer:
    """Turns MQTT messages into `Outgoing` records, counting what it accepts and refuses in `stats`.

    `partitions` (topic -> partition count) is shared with the Kafka side, which updates it
    when it recreates topics; `report(topic, payload)` publishes an error report over MQTT.
    """

    def __init__(
        self,
        settings: HubSettings,
        router: Router,
        partitions: dict[str, int],
        stats: Stats,
        report: Callable[[str, bytes], object],
    ) -> None:
        self.settings = settings
        self.router = router
        self.partitions = partitions
        self.stats = stats
        self.reports = ErrorReports()
        self._report = report
        # Messages of a partner no route knows: applied since the worker last read the catalog (the broker
        # lets only partners publish in their namespace). The worker reads the catalog and routes them again.
        self.held: list[Message] = []

    def prepare_all(self, messages: list[Message], *, hold_unknown_partners: bool = True) -> list[Outgoing]:
        """`Outgoing` records for a batch, in order; the per-message hot path of an ingest worker."""
        out: list[Outgoing] = []
        append = out.append
        route_of = self.router.route
        partitions = self.partitions
        accepted = 0
        devices = self.stats.devices
        last_ms, received = -1, b""
        for m in messages:
            if m.received_ms != last_ms:  # a batch shares a few receive times
                last_ms, received = m.received_ms, str(m.received_ms).encode()
            found = route_of(m.topic)
            if found is None:
                partner = self.router.partner_of(m.topic, self.settings.mqtt_namespace_root) or UNKNOWN
                if hold_unknown_partners and partner not in self.router.partners and partner != UNKNOWN:
                    self.held.append(m)
                    continue
                append(
                    self.dead_letter(
                        m, partner, UNKNOWN, "unknown_topic", f"no feed is configured for topic {m.topic!r}"
                    )
                )
                continue
            route, device = found
            try:
                record = route.decoder.decode(m.payload, device, last_ms)
                value = route.encoder.encode(record)
            except PayloadError as exc:
                if exc.code == HEADER_LINE:  # a CSV header line: nothing the device did wrong, nothing to land
                    self.stats.counters[(route.partner_id, route.feed, HEADER_LINE)] += 1
                    continue
                append(self.dead_letter(m, route.partner_id, route.feed, exc.code, str(exc)))
                continue
            device_id = record["device_id"]
            key = device_id.encode()
            accepted += 1
            devices.add((route.partner_id, route.feed, device_id))
            topic = route.kafka_topic
            headers = [*route.headers, (DEVICE, key), (RECEIVED_MS, received), (MQTT_TOPIC, m.topic.encode())]
            if m.dup:
                headers.append(_MQTT_REDELIVERY)
            append(Outgoing(topic, partition_for(key, partitions[topic]), key, value, headers))
        self.stats.accepted += accepted
        return out

    def dead_letter(self, m: Message, partner: str, feed: str, reason: str, message: str) -> Outgoing:
        self.stats.rejected += 1
        if partner != UNKNOWN and self.reports.allow(partner):
            self._report(
                report_topic(self.settings.mqtt_error_root, partner, feed),
                report_payload(m.topic, feed, reason, message, m.received_ms),
            )
        topic = self.settings.kafka_dead_letter_topic
        key = m.topic.encode()
        headers = [
            *dead_letters.refused(reason, message),
            (dead_letters.PARTNER, partner.encode()),
            (dead_letters.FEED, feed.encode()),
            (dead_letters.MQTT_TOPIC, m.topic.encode()),
            (dead_letters.RECEIVED_MS, str(m.received_ms).encode()),
        ]
        if m.dup:
            headers.append(_MQTT_REDELIVERY)
        return Outgoing(
            topic, partition_for(key, self.partitions[topic]), key, m.payload, headers, (partner, feed, reason)
        )
