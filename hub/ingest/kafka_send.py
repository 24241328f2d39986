"""Ingest's Kafka side: record batches per topic-partition, retried until acknowledged, topics kept alive.

`deliver` returns only when Kafka acknowledged every record of a batch, so the caller can
PUBACK its MQTT messages. While Kafka (or the database holding the topic locks) is down it
retries with backoff, at most 5 s apart, and takes nothing new: the unacknowledged messages
stay with the MQTT broker.

A restarted local broker has forgotten every topic, and acknowledges records for topics it
recreates by itself with its own defaults (4 partitions) and may lose again. So each worker
keeps a marker topic of its own (`marker_spec`) and recreates the hub's topics with their
settings when they go missing (`recover_topics`, also every second beside the hot path);
acknowledgements only count when the marker survived the whole send, else everything is
sent again (at least once; landing is idempotent).

Each send holds the shared lock of its feed topics (topic_locks.py), so landing never
recreates a topic to free the broker's memory while a record for it is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from hub.errors import ServerUnavailable
from hub.ingest.outgoing import Outgoing, partition_for
from hub.ingest.topic_locks import TopicLocks
from hub.kafka import TRANSIENT_KAFKA_ERRORS, KafkaAdmin, TopicSpec, client_options
from hub.outage import Outages
from hub.settings import HubSettings

log = logging.getLogger("hub.ingest")


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
        self._topic_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.admin = await KafkaAdmin(s, self.bootstrap).__aenter__()
        await self.admin.ensure_topics([*self.topic_specs, self.marker])
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

    async def deliver(self, everything: list[Outgoing]) -> None:
        """Send the records; return only when Kafka acknowledged every one.

        While Kafka is down this retries (with backoff, at most 5 s apart) the records it has not
        acknowledged yet. A broker that restarted meanwhile may have acknowledged records for topics it
        had forgotten (the local broker does, and then loses them), so acknowledgements only count when
        our marker topic survived the whole send; otherwise everything is sent again (at least once).
        """
        pending = everything
        epoch = self.topics_epoch
        backoff = 0.2
        while True:
            pending = await self.send_locked(pending)
            if not pending:
                if await self.topics_intact(epoch):
                    break
                log.warning(
                    "the Kafka broker forgot our topics while %d records were sent (restarted?): sending them again",
                    len(everything),
                )
                pending = everything
            else:
                log.debug(
                    "%d records are not acknowledged yet; retrying in %.1f s (their messages stay unacknowledged)",
                    len(pending),
                    backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            recovered = await self.recover_topics()
            if self.topics_epoch != epoch:
                self.repartition(everything)
            if recovered and pending is everything:
                epoch = self.topics_epoch

    async def send_locked(self, outgoing: list[Outgoing]) -> list[Outgoing]:
        """`send`, holding the shared lock of each feed topic from before the send until it is settled.

        Returns the records to send again: those Kafka did not acknowledge; all of them when the
        database cannot be reached (nothing is sent then); and those of feed topics when the locks
        were lost during the send (the database connection dropped), since landing may then have
        recreated a topic after the broker acknowledged one of them.
        """
        dead_letters = self.settings.kafka_dead_letter_topic
        topics = sorted({o.topic for o in outgoing if o.topic != dead_letters})
        try:
            await self.locks.acquire(topics)
        except ServerUnavailable as exc:
            self.outages.failed("take the topic locks before a send (the records wait)", exc, "PostgreSQL")
            return outgoing
        self.outages.back("PostgreSQL")
        try:
            failed = await self.send(outgoing)
        except BaseException:
            self.locks.drop()
            raise
        if await self.locks.release(topics):
            return failed
        log.warning("the topic locks were lost during a send (database connection dropped): sending it again")
        return [o for o in outgoing if o.topic != dead_letters] + [o for o in failed if o.topic == dead_letters]

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

    async def topics_intact(self, epoch: int) -> bool:
        """True if the broker kept our topics since `epoch`: our marker topic is still there, not recreated."""
        try:
            topics = await self.admin.topics()
        except Exception as exc:
            log.warning("cannot check Kafka topics: %r", exc)
            return False
        return self.marker.name in topics and self.topics_epoch == epoch

    async def _watch_topics(self, every_s: float = 1.0) -> None:
        """Check our topics every second, beside the hot path, so a broker restart is noticed even between batches."""
        while True:
            await asyncio.sleep(every_s)
            await self.recover_topics()
