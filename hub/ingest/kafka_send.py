"""Ingest's Kafka side: record batches per topic-partition, retried until acknowledged, topics kept alive.

`deliver` returns only when Kafka acknowledged every record of a batch in the broker epoch landing
lands (hub/catalog/broker_epoch.py), and what must be durable with the acknowledgement is written
(ack_ledger.py), so the caller can PUBACK its MQTT messages (or, with `HUB_INGEST_ACK=landed`,
wait for landing). While Kafka (or the database holding the topic locks) is down it retries with
backoff, at most 5 s apart, and takes nothing new: the unacknowledged messages stay with the MQTT
broker.

A restarted local broker has forgotten every topic, and acknowledges records for topics it
recreates by itself with its own defaults (4 partitions) and may lose again. So each worker
keeps a marker topic of its own (`marker_spec`) and recreates the hub's topics with their
settings when they go missing (`recover_topics`, also every second beside the hot path);
acknowledgements only count when our marker and the epoch's marker survived the whole send, else
the whole batch is sent again, each record marked as a resend (at least once; landing is
idempotent and counts such copies apart from a device's duplicates).

Each send holds the shared lock of its feed topics (topic_locks.py), so landing never
recreates a topic to free the broker's memory while a record for it is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import replace

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from hub.catalog.broker_epoch import Epoch, record_first
from hub.errors import ServerUnavailable
from hub.ingest.ack_ledger import Released, needs_round_trip, release_args
from hub.ingest.outgoing import Outgoing, mark_resent, partition_for
from hub.ingest.topic_locks import TopicLocks
from hub.kafka import TRANSIENT_KAFKA_ERRORS, KafkaAdmin, TopicSpec, client_options
from hub.outage import Outages
from hub.settings import HubSettings

log = logging.getLogger("hub.ingest")

# With `land_check_broker_epoch` off: records are sent without a broker epoch (and no loss can be counted).
UNCHECKED = Epoch("", "")


def marker_spec(settings: HubSettings, index: int) -> TopicSpec:
    """An empty topic only this worker creates: if the broker no longer has it, the broker restarted."""
    return TopicSpec(f"{settings.kafka_topic_prefix}_ingest-{index}.alive", 1, settings.kafka_replication_factor)


class KafkaSender:
    """The producer, the admin client and the topics of one ingest worker; `start` and `stop` bracket its use."""

    def __init__(
        self,
        settings: HubSettings,
        bootstrap: str,
        index: int,
        topic_specs: list[TopicSpec],
        locks: TopicLocks,
        marker: TopicSpec | None = None,  # default: the ingest worker `index`'s (see marker_spec)
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic_specs = topic_specs
        self.marker = marker or marker_spec(settings, index)
        self.locks = locks
        self.partitions: dict[str, int] = {}  # topic -> partition count (shared with the Preparer)
        self.topics_epoch = 0  # moves on each time this sender creates a topic
        self.sent_batches = 0
        self.outages = Outages(log)  # the worker's: one log line when a server goes away, one when it is back
        self.epoch: Epoch | None = None  # the broker epoch, while the broker has its marker topic
        self._topic_watch: asyncio.Task[None] | None = None
        self._waiting_logged = 0.0

    @property
    def landed_topics(self) -> set[str]:
        """The topics landing stores offsets for, which an acknowledgement after landing waits for.

        The feed topics, and the dead-letter topic where landing stores it in the database with its
        offsets (`dead_letter_store`, the default): a dead letter's PUBACK then waits until it is
        stored too. (ack_ledger.py records loss ranges for feed topics only, whatever this holds.)
        """
        dead_letters = self.settings.kafka_dead_letter_topic
        return {s.name for s in self.topic_specs if s.name != dead_letters or self.settings.dead_letter_store}

    async def start(self, database_url: str | None = None) -> None:
        """Connect; with `database_url`, also record the first broker epoch if no landing worker ever ran."""
        s = self.settings
        self.admin = await KafkaAdmin(s, self.bootstrap).__aenter__()
        await self.admin.ensure_topics([*self.topic_specs, self.marker])
        if database_url is not None and s.land_check_broker_epoch:
            conn = await asyncpg.connect(database_url)
            try:  # the first epoch, if no landing worker ever ran: what is acknowledged before it starts is counted
                await record_first(conn, self.admin, s)
            finally:
                await conn.close()
        self.producer = AIOKafkaProducer(
            **client_options(s, self.bootstrap),
            acks="all",
            linger_ms=s.kafka_linger_ms,
            max_batch_size=s.kafka_max_batch_bytes,
            enable_idempotence=s.kafka_idempotent,
            request_timeout_ms=15_000,
        )
        await self.producer.start()
        for spec in self.topic_specs:
            self.partitions[spec.name] = len(await self.producer.partitions_for(spec.name))
        self._topic_watch = asyncio.create_task(self._watch_topics(), name="ingest-topic-watch")

    async def stop(self, leave_timeout_s: float) -> None:
        if self._topic_watch is not None:
            self._topic_watch.cancel()
        await self._stop_producer(leave_timeout_s)
        await self.admin.__aexit__(None, None, None)

    async def _stop_producer(self, leave_timeout_s: float) -> None:
        """Stop the producer within `leave_timeout_s`, even while Kafka is unreachable.

        aiokafka's stop waits for every queued batch, and a batch for a broker that does not
        answer never expires. Records still queued then are abandoned: their MQTT messages
        were not acknowledged, so the broker delivers them again.
        """
        stopping = asyncio.ensure_future(self.producer.stop())
        try:
            await asyncio.wait_for(asyncio.shield(stopping), leave_timeout_s)
        except TimeoutError:
            log.warning("Kafka took no records for %.0f s; abandoning the ones still queued", leave_timeout_s)
            # aiokafka has no public way to abort: end its sender task, which `stop` then finds done.
            sender_task = getattr(getattr(self.producer, "_sender", None), "sender_task", None)
            if isinstance(sender_task, asyncio.Task):
                sender_task.cancel()
            await asyncio.wait_for(stopping, leave_timeout_s)

    async def use_topics(self, topic_specs: list[TopicSpec]) -> None:
        """The catalog changed: create its topics and learn the partition counts of new ones."""
        self.topic_specs = topic_specs
        await self.recover_topics()
        for spec in self.topic_specs:
            if spec.name not in self.partitions:
                self.partitions[spec.name] = len(await self.producer.partitions_for(spec.name))

    # --- sending -----------------------------------------------------------------------

    async def deliver(
        self, everything: list[Outgoing], *, record: bool = False, counts: Counter[tuple[str, str, str]] | None = None
    ) -> Released:
        """Send the records; return only when Kafka acknowledged every one, in the current broker epoch.

        `record`: write the batch's counters (its dead letters', and `counts` of messages that sent
        nothing) and record positions with the release of its topic locks (ack_ledger.py), for an
        acknowledgement that follows at once; otherwise read the baseline its wait for landing needs.
        While Kafka or the database is down this retries with backoff, at most 5 s apart. A batch
        that was not wholly confirmed (Kafka failed part of it, the broker restarted, the locks were
        lost, landing started a new epoch) is sent again whole, marked as a resend.
        """
        backoff = 0.2
        resent = False
        while True:
            outcome = await self._attempt(everything, record, counts or Counter())
            if isinstance(outcome, Released):
                return outcome
            why, sent = outcome
            # Once per outage at most as a warning (`outages`); each retry at DEBUG.
            log.debug("%s: sending %d records again in %.1f s (their messages stay unacknowledged)",
                      why, len(everything), backoff)  # fmt: skip
            if sent and not resent:  # a copy may be in Kafka: the next one is the hub's own
                mark_resent(everything)
                resent = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            before = self.topics_epoch
            await self.recover_topics()
            if self.topics_epoch != before:
                self.repartition(everything)

    async def _attempt(
        self, everything: list[Outgoing], record: bool, counts: Counter[tuple[str, str, str]]
    ) -> Released | tuple[str, bool]:
        """One send of the whole batch under its topic locks: what the release found, or (why not, whether sent)."""
        try:
            epoch = await self.landing_epoch()
        except ServerUnavailable as exc:
            return f"cannot read the broker epoch: {exc}", False
        if epoch is None:
            return "the Kafka broker lost its log and no landing worker has started a new epoch yet", False
        start = self.topics_epoch
        dead_letters = self.settings.kafka_dead_letter_topic
        topics = sorted({o.topic for o in everything if o.topic != dead_letters})
        try:
            await self.locks.acquire(topics)
        except ServerUnavailable as exc:
            self.outages.failed("take the topic locks before a send (the records wait)", exc, "PostgreSQL")
            return f"not sent: {exc}", False
        self.outages.back("PostgreSQL")
        try:
            failed = await self.send(everything)
            intact = not failed and await self.topics_intact(start, epoch)
        except BaseException:
            self.locks.drop()
            raise
        checked = None if epoch is UNCHECKED else epoch.epoch
        args = release_args(topics, checked, intact, everything, self.landed_topics, record=record, counts=counts)
        result: Released | None = Released(checked, [], {})
        if needs_round_trip(args) if intact else topics:  # else nothing to unlock, record or read
            result = await self.locks.release(topics, args)
        if failed:
            return f"Kafka did not acknowledge {len(failed)} of {len(everything)} records", True
        if not intact:
            return "the Kafka broker forgot our topics or the broker epoch while they were sent (restarted?)", True
        if result is None:
            return "the topic locks were lost during the send (database connection dropped)", True
        if checked is None:
            return replace(result, epoch=None)
        if result.epoch != checked:
            self.epoch = None
            return f"a landing worker started a new broker epoch ({result.epoch}) while they were sent", True
        return result

    async def landing_epoch(self) -> Epoch | None:
        """The broker epoch to send in: the recorded one, while the broker still has its marker topic.

        None when the broker lost its log (it has no marker) and landing has not started a new epoch
        yet: records sent now could be counted in neither log, so nothing is sent until it has.
        """
        if self.epoch is not None:
            return self.epoch
        if not self.settings.land_check_broker_epoch:
            return UNCHECKED
        row = await self.locks.run("SELECT epoch, marker_topic FROM hub.land_broker")
        if row is None:
            return None
        try:
            present = row["marker_topic"] in await self.admin.topics()
        except Exception as exc:
            raise ServerUnavailable("Kafka", self.bootstrap, f"cannot list topics: {exc!r}") from exc
        if not present:
            now = time.monotonic()
            if now - self._waiting_logged > 10:
                self._waiting_logged = now
                log.warning("waiting for a landing worker to start a new broker epoch (epoch %s is gone)", row["epoch"])
            return None
        self.epoch = Epoch(row["epoch"], row["marker_topic"])
        return self.epoch

    async def send(self, outgoing: list[Outgoing]) -> list[Outgoing]:
        """One record batch per topic-partition (split when full); returns the records Kafka did not acknowledge.

        Each acknowledged record gets its offset (`Outgoing.offset`).
        """
        producer = self.producer
        by_tp: dict[tuple[str, int], list[Outgoing]] = defaultdict(list)
        for o in outgoing:
            o.offset = -1
            by_tp[(o.topic, o.partition)].append(o)
        sent: list[tuple[Awaitable[object], list[Outgoing]]] = []
        failed: list[Outgoing] = []

        async def submit(batch: BatchBuilder, topic: str, partition: int, members: list[Outgoing]) -> None:
            try:
                sent.append((await producer.send_batch(batch, topic, partition=partition), members))
            except TRANSIENT_KAFKA_ERRORS as exc:
                log.warning("cannot queue a batch for %s[%d]: %r", topic, partition, exc)
                failed.extend(members)

        cluster = producer.client.cluster
        for (topic, partition), items in by_tp.items():
            known = cluster.partitions_for_topic(topic)
            if not known or partition not in known:
                # The broker forgot this topic: a send would have it recreated with the broker's
                # defaults (4 partitions on the local broker). Wait until `recover_topics` made it.
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
                if not isinstance(result, TRANSIENT_KAFKA_ERRORS):
                    raise result
                failed += members
                continue
            base = result.offset  # type: ignore[attr-defined]  # RecordMetadata: the batch's first offset
            for i, o in enumerate(members):
                o.offset = base + i
        self.sent_batches += len(sent)
        return failed

    def repartition(self, outgoing: list[Outgoing]) -> None:
        """Recompute partitions after topics were recreated (their partition count may differ)."""
        for o in outgoing:
            o.partition = partition_for(o.key, self.partitions[o.topic])

    # --- topics ------------------------------------------------------------------------

    async def recover_topics(self) -> bool:
        """After a broker restart the local broker has forgotten our topics: recreate them with their settings.

        True when every topic exists. Each time this creates a topic the topic epoch moves on,
        so a send that was under way meanwhile is not trusted (see `deliver`).
        """
        try:
            created = await self.admin.ensure_topics([*self.topic_specs, self.marker])
        except Exception as exc:  # the broker may still be down; the next check tries again
            self.outages.failed("check Kafka topics (tried again every second)", exc, "Kafka")
            return False
        self.outages.back("Kafka")
        if created:
            self.topics_epoch += 1
            log.warning("recreated Kafka topics (the broker had forgotten them): %s", created)
            for spec in self.topic_specs:
                if spec.name in created:
                    self.partitions[spec.name] = spec.partitions
        cluster = self.producer.client.cluster
        if any(not cluster.partitions_for_topic(spec.name) for spec in self.topic_specs):
            try:  # let the producer learn the recreated topics (asks only for topics that exist now)
                await self.producer.client.force_metadata_update()
            except Exception as exc:
                log.warning("cannot refresh the producer's Kafka metadata yet: %r", exc)
                return False
        return True

    async def topics_intact(self, topics_epoch: int, epoch: Epoch) -> bool:
        """True if the broker kept our topics since `topics_epoch` (our marker topic is still there, not
        recreated) and still has the broker epoch's marker: what it acknowledged is in the log landing lands."""
        try:
            topics = await self.admin.topics()
        except Exception as exc:
            log.warning("cannot check Kafka topics: %r", exc)
            return False
        if epoch is not UNCHECKED and epoch.marker_topic not in topics:
            self.epoch = None
            return False
        return self.marker.name in topics and self.topics_epoch == topics_epoch

    async def _watch_topics(self, every_s: float = 1.0) -> None:
        """Check our topics every second, beside the hot path, so a broker restart is noticed even between batches."""
        while True:
            await asyncio.sleep(every_s)
            await self.recover_topics()
