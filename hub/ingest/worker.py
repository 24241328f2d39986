"""The ingest worker: MQTT messages in, Avro records (or dead letters) to Kafka, PUBACK after Kafka's ack.

Per batch: drain the inbox filled by paho's thread, route, decode, validate and encode
each message, build one Kafka record batch per topic-partition, send them all, and
only when every batch is acknowledged (and the broker provably kept our topics meanwhile)
send the PUBACKs. While Kafka is down the batch is retried with backoff and nothing new
is processed: unacknowledged messages stay in the broker's session for us, so nothing is
lost. Memory: what the broker pushes meanwhile waits in the inbox, up to the broker's
in-flight limit for this session (`max_inflight_messages` for MQTT 3.1.1 sessions).

The worker subscribes to each partner's whole namespace (`partners/<id>/#`), so a message
on a topic no feed matches is dead-lettered (`unknown_topic`) rather than dropped unseen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from hub.control import catalog
from hub.control.plan import topic_spec
from hub.db import connect
from hub.errors import PayloadError
from hub.ingest.decode import FeedDecoder
from hub.ingest.mqtt_source import Message, MqttSource
from hub.ingest.routes import FeedRoute, Router
from hub.ingest.wire import WireEncoder
from hub.kafka import KafkaAdmin, TopicSpec, client_options, dead_letter_spec
from hub.runtime import FeedRuntime, load_feeds
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.ingest")

UNKNOWN = "_unknown"


def client_id(index: int) -> str:
    return f"hub-ingest-{index}"


def namespace_filters(settings: HubSettings, partner_ids: list[str]) -> list[str]:
    """One subscription per partner namespace: a topic no feed matches is still seen, and dead-lettered."""
    return sorted(f"{settings.mqtt_namespace_root}/{p}/#" for p in partner_ids)


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


def _signature(feeds: list[FeedRuntime]) -> list[tuple[str, str, int, str]]:
    return sorted((f.row.partner_id, f.row.name, f.schema_id, json.dumps(f.row.config, sort_keys=True)) for f in feeds)


def marker_spec(settings: HubSettings, index: int) -> TopicSpec:
    """An empty topic only this worker creates: if the broker no longer has it, the broker restarted."""
    return TopicSpec(f"{settings.kafka_topic_prefix}_ingest-{index}.alive", 1, settings.kafka_replication_factor)


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
    def __init__(
        self,
        settings: HubSettings,
        endpoints: Endpoints,
        index: int = 0,
        *,
        drain_only: bool = False,
        leave_timeout_s: float = 30.0,
    ):
        self.settings = settings
        self.endpoints = endpoints
        self.index = index
        self.drain_only = drain_only
        self.leave_timeout_s = leave_timeout_s
        self.stats = Stats()
        self.reports = ErrorReports()
        self._wake = asyncio.Event()
        self._partitions: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._last_reload = time.monotonic()
        self._topic_watch: asyncio.Task[None] | None = None
        self._topics_epoch = 0
        self._abandoned = False  # a batch was given up unacknowledged: the session must be kept
        self.session_ended = False  # set on leaving: the broker session was ended (nothing left in it)
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
        self._marker = marker_spec(s, self.index)
        self.admin = await KafkaAdmin(s, ep.kafka_bootstrap).__aenter__()
        await self.admin.ensure_topics([*self.topic_specs, self._marker])
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
        self._topic_watch = asyncio.create_task(self._watch_topics(), name="ingest-topic-watch")
        loop = asyncio.get_running_loop()
        name = client_id(self.index)
        filters = namespace_filters(s, [r["id"] for r in await catalog.partners(self.db)])
        previous = await self._recorded_filters(name)
        self.source = MqttSource(
            ep.mqtt(),
            name,
            filters,
            subscribe=not self.drain_only,
            unsubscribe_first=previous,
            keepalive_s=s.mqtt_keepalive_s,
            tls_ca=str(s.mqtt_tls_ca) if s.mqtt_tls_ca else None,
            wake=lambda: self._wake_threadsafe(loop),
            wake_every=s.ingest_batch_size,
        )
        await asyncio.to_thread(self.source.start)
        if not self.drain_only:
            await catalog.set_resource(self.db, "mqtt-session", name, "active", json.dumps({"filters": filters}))
        log.info(
            "ingest worker %s: %d feeds, %s %s",
            self.index,
            len(self.feeds),
            "draining the session of" if self.drain_only else "subscribed to",
            filters,
        )
        return self

    async def _recorded_filters(self, name: str) -> list[str]:
        """The filters this client id's broker session was subscribed to when it last ran."""
        detail = await self.db.fetchval(
            "SELECT detail FROM hub.resources WHERE kind = 'mqtt-session' AND name = $1", name
        )
        try:
            filters = json.loads(detail)["filters"] if detail else []
        except (ValueError, KeyError, TypeError):
            return []
        return [str(f) for f in filters] if isinstance(filters, list) else []

    async def __aexit__(self, *exc: object) -> None:
        clean = exc[0] is None or exc[0] is asyncio.CancelledError
        try:
            if clean:
                self.session_ended = await self.leave_cleanly()
            else:
                self.source.stop(end_session=False)  # keep the session: a restart gets what it missed
        finally:
            if self._topic_watch is not None:
                self._topic_watch.cancel()
            await self._stop_producer()
            await self.admin.__aexit__(None, None, None)
            await self._flush_stats(force=True)
            await self.db.close()

    async def _stop_producer(self) -> None:
        """Stop the producer within `leave_timeout_s`, even while Kafka is unreachable.

        aiokafka's stop waits for every queued batch, and a batch for a broker that does not
        answer never expires. Records still queued then are abandoned: their MQTT messages
        were not acknowledged, so the broker delivers them again.
        """
        stopping = asyncio.ensure_future(self.producer.stop())
        try:
            await asyncio.wait_for(asyncio.shield(stopping), self.leave_timeout_s)
        except TimeoutError:
            log.warning("Kafka took no records for %.0f s; abandoning the ones still queued", self.leave_timeout_s)
            # aiokafka has no public way to abort: end its sender task, which `stop` then finds done.
            sender_task = getattr(getattr(self.producer, "_sender", None), "sender_task", None)
            if isinstance(sender_task, asyncio.Task):
                sender_task.cancel()
            await asyncio.wait_for(stopping, self.leave_timeout_s)

    async def leave_cleanly(self, quiet_s: float = 0.5) -> bool:
        """Leave the shared group, finish what was delivered to us, then end our broker session.

        Once the broker confirmed the unsubscribe it routes nothing new to us; what it had
        already queued for this session still arrives and is sent to Kafka and acknowledged
        before the session ends, so ending it loses nothing. The session is ended only when
        every message delivered on this connection was acknowledged; otherwise (a batch was
        abandoned, or Kafka takes none for `leave_timeout_s`) it is kept, out of the shared
        group, for this index's next worker or `drain_stale_sessions`, and this returns False.
        """
        leaving = asyncio.ensure_future(asyncio.to_thread(self.source.leave_group))
        try:
            while not self._abandoned:
                await asyncio.wait_for(self.step(), self.leave_timeout_s)
                if leaving.done() and not self.source.inbox and time.time() - self.source.last_message_at > quiet_s:
                    break
        except TimeoutError:
            self._abandoned = True
        if not await leaving:
            log.warning("no UNSUBACK from the MQTT broker")
        outstanding = self.source.outstanding
        if self._abandoned or outstanding:
            log.warning(
                "keeping broker session %s: %d messages delivered to it are not acknowledged (Kafka down?)",
                client_id(self.index),
                outstanding,
            )
            await asyncio.to_thread(self.source.stop, False)
            return False
        await asyncio.to_thread(self.source.stop, True)
        await catalog.set_resource(self.db, "mqtt-session", client_id(self.index), "ended")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set; a batch under way then gets `leave_timeout_s` to finish.

        A batch Kafka cannot take (it is down) is then abandoned unacknowledged, so that a stop
        request is honoured; the session keeps its messages (see `leave_cleanly`).
        """
        stopped = asyncio.ensure_future(stop.wait())
        step: asyncio.Future[int] | None = None
        try:
            while not stop.is_set():
                step = asyncio.ensure_future(self.step())
                await asyncio.wait((step, stopped), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    try:
                        await asyncio.wait_for(step, self.leave_timeout_s)
                    except TimeoutError:
                        self._abandoned = True
                        log.warning(
                            "stopping: abandoned a batch Kafka did not take within %.0f s", self.leave_timeout_s
                        )
                        return
                step.result()
        finally:
            stopped.cancel()
            if step is not None and not step.done():  # run() itself was cancelled
                step.cancel()

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
        await self._maybe_reload()
        return len(messages)

    async def _maybe_reload(self) -> None:
        """Pick up partners, feeds and schema versions applied while we run.

        A new partner's namespace is subscribed to at once, so its devices are not refused
        as unknown until a restart; a new schema version is used for the next message.
        """
        now = time.monotonic()
        if self.drain_only or now - self._last_reload < self.settings.catalog_reload_s:
            return
        self._last_reload = now
        try:
            feeds = await load_feeds(self.db)
            partners = [r["id"] for r in await catalog.partners(self.db)]
        except Exception as exc:  # the database may be restarting: try again next time
            log.warning("cannot reload the catalog yet: %r", exc)
            return
        if _signature(feeds) == _signature(self.feeds):
            return
        s = self.settings
        self.feeds = feeds
        self.topic_specs = [dead_letter_spec(s), *(topic_spec(s, f.row) for f in feeds)]
        await self._recover_topics()
        for spec in self.topic_specs:
            if spec.name not in self._partitions:
                self._partitions[spec.name] = len(await self.producer.partitions_for(spec.name))
        self.router = Router(build_routes(feeds, s))
        added = self.source.add_filters(namespace_filters(s, partners))
        if added:
            await catalog.set_resource(
                self.db,
                "mqtt-session",
                client_id(self.index),
                "active",
                json.dumps({"filters": namespace_filters(s, partners)}),
            )
        log.info("catalog reloaded: %d feeds; new subscriptions %s", len(feeds), added)

    async def process(self, messages: list[Message]) -> None:
        """Send the messages' records; PUBACK them only when Kafka acknowledged every one.

        While Kafka is down this retries (with backoff, at most 5 s apart) the records it has not
        acknowledged yet and takes nothing new: the unacknowledged messages stay with the broker.
        A broker that restarted meanwhile may have acknowledged records for topics it had forgotten
        (the local broker does, and then loses them), so acknowledgements only count when our
        marker topic survived the whole send; otherwise everything is sent again (at least once).
        """
        everything = [self.prepare(m) for m in messages]
        pending = everything
        epoch = self._topics_epoch
        backoff = 0.2
        while True:
            pending = await self.send(pending)
            if not pending:
                if await self._topics_intact(epoch):
                    break
                log.warning(
                    "the Kafka broker forgot our topics while %d records were sent (restarted?): sending them again",
                    len(everything),
                )
                pending = everything
            else:
                log.warning(
                    "Kafka did not acknowledge %d records; retrying in %.1f s (their messages stay unacknowledged)",
                    len(pending),
                    backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            recovered = await self._recover_topics()
            if self._topics_epoch != epoch:
                self._repartition(everything)
            if recovered and pending is everything:
                epoch = self._topics_epoch
        self.source.ack(messages)

    def _repartition(self, outgoing: list[Outgoing]) -> None:
        """Recompute partitions after topics were recreated (their partition count may differ)."""
        for o in outgoing:
            o.partition = partition_for(o.key, self._partitions[o.topic])

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

    async def send(self, outgoing: list[Outgoing]) -> list[Outgoing]:
        """One record batch per topic-partition (split when full); returns the records Kafka did not acknowledge."""
        producer = self.producer
        by_tp: dict[tuple[str, int], list[Outgoing]] = defaultdict(list)
        for o in outgoing:
            by_tp[(o.topic, o.partition)].append(o)
        sent: list[tuple[Awaitable[object], list[Outgoing]]] = []
        failed: list[Outgoing] = []

        async def submit(batch: BatchBuilder, topic: str, partition: int, members: list[Outgoing]) -> None:
            try:
                sent.append((await producer.send_batch(batch, topic, partition=partition), members))
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("cannot queue a batch for %s[%d]: %r", topic, partition, exc)
                failed.extend(members)

        cluster = producer.client.cluster
        for (topic, partition), items in by_tp.items():
            known = cluster.partitions_for_topic(topic)
            if not known or partition not in known:
                # The broker forgot this topic: a send would have it recreated with the broker's
                # defaults (4 partitions on the local broker). Wait until `_recover_topics` made it.
                failed += items
                continue
            batch = producer.create_batch()
            members: list[Outgoing] = []
            for o in items:
                if batch.append(timestamp=None, key=o.key, value=o.value, headers=o.headers) is None:
                    await submit(batch, topic, partition, members)
                    batch, members = producer.create_batch(), []
                    batch.append(timestamp=None, key=o.key, value=o.value, headers=o.headers)
                members.append(o)
            await submit(batch, topic, partition, members)
        results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        for result, (_f, members) in zip(results, sent, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, KafkaError | OSError | TimeoutError):
                    raise result
                failed += members
        self.sent_batches += len(sent)
        return failed

    async def _recover_topics(self) -> bool:
        """After a broker restart the local broker has forgotten our topics: recreate them with their settings.

        True when every topic exists. Each time this creates a topic the topic epoch moves on,
        so a send that was under way meanwhile is not trusted (see `process`).
        """
        try:
            created = await self.admin.ensure_topics([*self.topic_specs, self._marker])
        except Exception as exc:  # the broker may still be down; the next check tries again
            log.warning("cannot check Kafka topics yet: %r", exc)
            return False
        if created:
            self._topics_epoch += 1
            log.warning("recreated Kafka topics (the broker had forgotten them): %s", created)
            for spec in self.topic_specs:
                if spec.name in created:
                    self._partitions[spec.name] = spec.partitions
        cluster = self.producer.client.cluster
        if any(not cluster.partitions_for_topic(spec.name) for spec in self.topic_specs):
            try:  # let the producer learn the recreated topics (asks only for topics that exist now)
                await self.producer.client.force_metadata_update()
            except Exception as exc:
                log.warning("cannot refresh the producer's Kafka metadata yet: %r", exc)
                return False
        return True

    async def _topics_intact(self, epoch: int) -> bool:
        """True if the broker kept our topics since `epoch`: our marker topic is still there, not recreated."""
        try:
            topics = await self.admin.topics()
        except Exception as exc:
            log.warning("cannot check Kafka topics: %r", exc)
            return False
        return self._marker.name in topics and self._topics_epoch == epoch

    async def _watch_topics(self, every_s: float = 1.0) -> None:
        """Check our topics every second, beside the hot path, so a broker restart is noticed even between batches."""
        while True:
            await asyncio.sleep(every_s)
            await self._recover_topics()

    async def _flush_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < 2.0:
            return
        self._last_flush = now
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
