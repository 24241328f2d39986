"""The ingest worker: MQTT messages in, Avro records (or dead letters) to Kafka, PUBACK after Kafka's ack.

Per batch: drain the inbox filled by paho's thread, route, decode, validate and encode
each message, build one Kafka record batch per topic-partition, send them all, and
only when every batch is acknowledged send the PUBACKs. While Kafka is down the batch
is retried with backoff and nothing new is taken: unacknowledged messages stay in the
broker (bounded by its in-flight limit), so memory stays bounded and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from hub.control import catalog
from hub.control.plan import topic_spec
from hub.db import connect
from hub.errors import PayloadError
from hub.ingest.decode import FeedDecoder
from hub.ingest.mqtt_source import Message, MqttSource
from hub.ingest.routes import FeedRoute, Router
from hub.ingest.wire import WireEncoder
from hub.kafka import KafkaAdmin, client_options, dead_letter_spec
from hub.runtime import FeedRuntime, load_feeds
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.ingest")

UNKNOWN = "_unknown"


def client_id(index: int) -> str:
    return f"hub-ingest-{index}"


def build_routes(feeds: list[FeedRuntime], settings: HubSettings) -> list[FeedRoute]:
    return [
        FeedRoute(
            partner_id=f.row.partner_id,
            feed=f.row.name,
            kafka_topic=f.row.kafka_topic,
            schema_id=f.schema_id,
            levels=tuple(f.row.mqtt_filter.split("/")),
            decoder=FeedDecoder(f.feed, f.schema.parsed, max_payload_bytes=settings.ingest_max_payload_bytes),
            encoder=WireEncoder(f.schema_id, f.schema.parsed),
        )
        for f in feeds
    ]


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner, so every Kafka tool agrees on where a device's records live."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Outgoing:
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Stats:
    counters: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (partner, feed, reason) -> n
    devices: set[tuple[str, str, str]] = field(default_factory=set)
    accepted: int = 0
    rejected: int = 0


class ErrorReports:
    """At most `per_second` error reports per partner, so a broken device cannot flood its owner."""

    def __init__(self, per_second: float = 20.0) -> None:
        self.per_second = per_second
        self._allowance: dict[str, tuple[float, float]] = {}

    def allow(self, partner: str) -> bool:
        now = time.monotonic()
        tokens, last = self._allowance.get(partner, (self.per_second, now))
        tokens = min(self.per_second, tokens + (now - last) * self.per_second)
        if tokens < 1:
            self._allowance[partner] = (tokens, now)
            return False
        self._allowance[partner] = (tokens - 1, now)
        return True


class IngestWorker:
    def __init__(self, settings: HubSettings, endpoints: Endpoints, index: int = 0, *, drain_only: bool = False):
        self.settings = settings
        self.endpoints = endpoints
        self.index = index
        self.drain_only = drain_only
        self.stats = Stats()
        self.reports = ErrorReports()
        self._wake = asyncio.Event()
        self._partitions: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._last_topic_check = time.monotonic()
        self.sent_batches = 0

    def _wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._wake.set)

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> IngestWorker:
        s, ep = self.settings, self.endpoints
        self.db = await connect(ep.database_url)
        self.feeds = await load_feeds(self.db)
        self.router = Router(build_routes(self.feeds, s))
        self.topic_specs = [dead_letter_spec(s), *(topic_spec(s, f.row) for f in self.feeds)]
        self.admin = await KafkaAdmin(s, ep.kafka_bootstrap).__aenter__()
        await self.admin.ensure_topics(self.topic_specs)
        self.producer = AIOKafkaProducer(
            **client_options(s, ep.kafka_bootstrap),
            acks="all",
            linger_ms=s.kafka_linger_ms,
            max_batch_size=s.kafka_max_batch_bytes,
            enable_idempotence=s.kafka_idempotent,
            request_timeout_ms=15_000,
        )
        await self.producer.start()
        for spec in self.topic_specs:
            self._partitions[spec.name] = len(await self.producer.partitions_for(spec.name))
        loop = asyncio.get_running_loop()
        filters = [] if self.drain_only else sorted({f.row.mqtt_filter for f in self.feeds})
        self.source = MqttSource(
            ep.mqtt(),
            client_id(self.index),
            filters,
            keepalive_s=s.mqtt_keepalive_s,
            tls_ca=str(s.mqtt_tls_ca) if s.mqtt_tls_ca else None,
            wake=lambda: self._wake_threadsafe(loop),
            wake_every=s.ingest_batch_size,
        )
        await asyncio.to_thread(self.source.start)
        await catalog.set_resource(self.db, "mqtt-session", client_id(self.index), "active")
        log.info("ingest worker %s: %d feeds, subscribed to %s", self.index, len(self.feeds), filters)
        return self

    async def __aexit__(self, *exc: object) -> None:
        clean = exc[0] is None or exc[0] is asyncio.CancelledError
        try:
            if clean:
                await self.leave_cleanly()
            else:
                self.source.stop(end_session=False)  # keep the session: a restart gets what it missed
        finally:
            await self.producer.stop()
            await self.admin.__aexit__(None, None, None)
            await self._flush_stats(force=True)
            await self.db.close()

    async def leave_cleanly(self, quiet_s: float = 0.5) -> None:
        """Leave the shared group, finish what was delivered to us, then end our broker session."""
        self.source.leave_group()
        while True:
            await self.step()
            if not self.source.inbox and time.time() - self.source.last_message_at > quiet_s:
                break
        await asyncio.to_thread(self.source.stop, True)
        await catalog.set_resource(self.db, "mqtt-session", client_id(self.index), "ended")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()

    # --- one batch ---------------------------------------------------------------------

    async def step(self) -> int:
        s = self.settings
        if len(self.source.inbox) < s.ingest_batch_size:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), s.ingest_flush_ms / 1000)
            except TimeoutError:
                pass
        messages = self.source.drain(s.ingest_batch_size * 4)
        if messages:
            await self.process(messages)
        await self._flush_stats()
        return len(messages)

    async def process(self, messages: list[Message]) -> None:
        outgoing = [self.prepare(m) for m in messages]
        backoff = 0.2
        while True:
            try:
                await self.send(outgoing)
                break
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning(
                    "Kafka did not acknowledge a batch of %d (%r); retrying in %.1f s", len(outgoing), exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._recover_topics()
        self.source.ack(messages)

    def prepare(self, m: Message) -> Outgoing:
        found = self.router.route(m.topic)
        received = str(m.received_ms).encode()
        if found is None:
            partner = self.router.partner_of(m.topic, self.settings.mqtt_namespace_root) or UNKNOWN
            return self.dead_letter(
                m, partner, UNKNOWN, "unknown_topic", f"no feed is configured for topic {m.topic!r}"
            )
        route, device = found
        try:
            record = route.decoder.decode(m.payload, device, m.received_ms)
            value = route.encoder.encode(record)
        except PayloadError as exc:
            return self.dead_letter(m, route.partner_id, route.feed, exc.code, str(exc))
        device_id = record["device_id"]
        key = device_id.encode()
        self.stats.counters[(route.partner_id, route.feed, "accepted")] += 1
        self.stats.accepted += 1
        self.stats.devices.add((route.partner_id, route.feed, device_id))
        return Outgoing(
            route.kafka_topic,
            partition_for(key, self._partitions[route.kafka_topic]),
            key,
            value,
            [
                ("partner", route.partner_id.encode()),
                ("feed", route.feed.encode()),
                ("device", key),
                ("received_ms", received),
                ("mqtt_topic", m.topic.encode()),
            ],
        )

    def dead_letter(self, m: Message, partner: str, feed: str, reason: str, message: str) -> Outgoing:
        self.stats.counters[(partner, feed, reason)] += 1
        self.stats.rejected += 1
        if partner != UNKNOWN and self.reports.allow(partner):
            report = {
                "topic": m.topic,
                "feed": feed,
                "reason": reason,
                "message": message,
                "received_ms": m.received_ms,
            }
            self.source.publish(f"{self.settings.mqtt_error_root}/{partner}/{feed}", orjson.dumps(report))
        topic = self.settings.kafka_dead_letter_topic
        key = m.topic.encode()
        return Outgoing(
            topic,
            partition_for(key, self._partitions[topic]),
            key,
            m.payload,
            [
                ("reason", reason.encode()),
                ("message", message.encode()),
                ("partner", partner.encode()),
                ("feed", feed.encode()),
                ("mqtt_topic", m.topic.encode()),
                ("received_ms", str(m.received_ms).encode()),
            ],
        )

    async def send(self, outgoing: list[Outgoing]) -> None:
        producer = self.producer
        by_tp: dict[tuple[str, int], list[Outgoing]] = defaultdict(list)
        for o in outgoing:
            by_tp[(o.topic, o.partition)].append(o)
        futures = []
        for (topic, partition), items in by_tp.items():
            batch = producer.create_batch()
            for o in items:
                if batch.append(timestamp=None, key=o.key, value=o.value, headers=o.headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(timestamp=None, key=o.key, value=o.value, headers=o.headers)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        self.sent_batches += len(futures)

    async def _recover_topics(self) -> None:
        """After a broker restart the local broker has forgotten our topics: recreate them with their settings."""
        try:
            created = await self.admin.ensure_topics(self.topic_specs)
            if created:
                log.warning("recreated Kafka topics after a broker restart: %s", created)
        except Exception as exc:  # the broker may still be down; the next retry tries again
            log.warning("cannot check Kafka topics yet: %r", exc)

    async def _flush_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < 2.0:
            return
        self._last_flush = now
        if now - self._last_topic_check > 5.0:
            self._last_topic_check = now
            await self._recover_topics()
        counters, devices = self.stats.counters, self.stats.devices
        if not counters and not devices:
            return
        self.stats.counters, self.stats.devices = Counter(), set()
        try:
            async with self.db.transaction():
                await self.db.executemany(
                    """INSERT INTO hub.ingest_counters (partner_id, feed, reason, messages) VALUES ($1, $2, $3, $4)
                       ON CONFLICT (partner_id, feed, reason)
                       DO UPDATE SET messages = hub.ingest_counters.messages + $4, last_at = now()""",
                    [(p, f, r, n) for (p, f, r), n in counters.items()],
                )
                await self.db.executemany(
                    """INSERT INTO hub.devices (partner_id, feed, device_id) VALUES ($1, $2, $3)
                       ON CONFLICT (partner_id, feed, device_id) DO UPDATE SET last_seen = now()""",
                    sorted(devices),
                )
        except Exception as exc:  # counters are best effort: keep them for the next flush
            log.warning("cannot record ingest counters yet: %r", exc)
            self.stats.counters.update(counters)
            self.stats.devices |= devices
