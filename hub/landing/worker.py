"""The landing worker: a Kafka consumer group member writing feed topics into feed tables.

Offsets live in the database, committed with the rows (see writer.py); on every
partition assignment the worker seeks to them. Kafka's own committed offsets are not
needed for correctness (and on the local broker they vanish on a restart).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hub.control.avro_schema import FeedSchema
from hub.control.plan import topic_spec
from hub.kafka import KafkaAdmin, client_options, dead_letter_spec
from hub.landing.rows import Rejected, RowBuilder
from hub.landing.writer import TableBatch, stored_offsets, write_batch
from hub.runtime import FeedRuntime, load_feeds, schema_by_id
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.land")


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: LandingWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass  # each batch is committed whole before the next getmany: nothing to flush

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.seek_assigned(list(assigned))


class LandingWorker:
    def __init__(self, settings: HubSettings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.landed = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.broker_resets = 0
        self._schemas: dict[int, FeedSchema | None] = {}
        self._last_reload = time.monotonic()
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> LandingWorker:
        s, ep = self.settings, self.endpoints
        self.pool = await asyncpg.create_pool(ep.database_url, min_size=1, max_size=2)
        async with self.pool.acquire() as conn:
            feeds = await load_feeds(conn)
        self._use_feeds(feeds)
        self.admin = await KafkaAdmin(s, ep.kafka_bootstrap).__aenter__()
        await self.admin.ensure_topics(self._topic_specs())
        self.producer = AIOKafkaProducer(**client_options(s, ep.kafka_bootstrap), acks="all")
        await self.producer.start()
        await self._start_consumer()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        await self.producer.stop()
        await self.admin.__aexit__(None, None, None)
        await self.pool.close()

    def _use_feeds(self, feeds: list[FeedRuntime]) -> None:
        self.feeds = {f.row.kafka_topic: f for f in feeds}
        self.builders = {t: RowBuilder(f.schema, self._schema_cached) for t, f in self.feeds.items()}

    def _topic_specs(self) -> list[Any]:
        return [dead_letter_spec(self.settings), *(topic_spec(self.settings, f.row) for f in self.feeds.values())]

    def _schema_cached(self, schema_id: int) -> FeedSchema | None:
        return self._schemas.get(schema_id)

    async def _start_consumer(self) -> None:
        s, ep = self.settings, self.endpoints
        consumer = AIOKafkaConsumer(
            **client_options(s, ep.kafka_bootstrap),
            group_id=s.land_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.land_batch_size,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        topics = sorted(self.feeds)
        if topics:
            consumer.subscribe(topics, listener=_SeekToStoredOffsets(self))
        self._consumer = consumer

    async def seek_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        async with self.pool.acquire() as conn:
            stored = await stored_offsets(conn, sorted({tp.topic for tp in assigned}))
        ends = await self._consumer.end_offsets(assigned) if assigned else {}
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self._consumer.seek(tp, 0)
            elif offset > ends.get(tp, 0):
                # The broker holds fewer records than we already landed: it was restarted
                # and lost its log (the local broker keeps records in memory only).
                self.broker_resets += 1
                log.warning(
                    "%s[%d]: broker log ends at %d but %d records were already landed; the broker lost its log. "
                    "Landing from its start; rows already landed are kept, records it held but we had not "
                    "landed are lost",
                    tp.topic, tp.partition, ends.get(tp, 0), offset,
                )  # fmt: skip
                self._consumer.seek(tp, 0)
            else:
                self._consumer.seek(tp, offset)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()

    async def step(self) -> int:
        assert self._consumer is not None
        await self._maybe_reload()
        try:
            data = await self._consumer.getmany(
                timeout_ms=self.settings.land_flush_ms, max_records=self.settings.land_batch_size
            )
        except KafkaError as exc:
            log.warning("Kafka fetch failed (%r): rebuilding the consumer", exc)
            await self._rebuild()
            return 0
        if not data:
            return 0
        n = sum(len(v) for v in data.values())
        await self.land(data)
        return n

    async def land(self, data: dict[TopicPartition, list[Any]]) -> None:
        for records in data.values():
            for r in records:
                sid = int.from_bytes(r.value[1:5], "big") if r.value and len(r.value) >= 5 else -1
                if sid >= 0 and sid not in self._schemas:
                    async with self.pool.acquire() as conn:
                        self._schemas[sid] = await schema_by_id(conn, sid)
        by_topic: dict[str, list[Any]] = defaultdict(list)
        offsets: dict[tuple[str, int], int] = {}
        for tp, records in data.items():
            by_topic[tp.topic].extend(records)
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
        batches: list[TableBatch] = []
        rejected: list[Rejected] = []
        for topic, records in by_topic.items():
            feed = self.feeds.get(topic)
            if feed is None:
                continue
            rows = self.builders[topic].build(records)
            rejected += rows.rejected
            batches.append(
                TableBatch(feed.row.partner_id, feed.row.name, feed.row.table_schema, feed.row.table_name, rows)
            )
        if rejected:
            await self.dead_letter(rejected)
        backoff = 0.2
        while True:
            try:
                async with self.pool.acquire() as conn:
                    result = await write_batch(conn, batches, offsets, self.dead_letter)
                break
            except (
                OSError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
            ) as exc:
                log.warning("database unavailable (%r): retrying the batch in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        self.landed += result.inserted
        self.duplicates += result.duplicates

    async def dead_letter(self, rejected: list[Rejected]) -> None:
        topic = self.settings.kafka_dead_letter_topic
        futures = []
        for r in rejected:
            headers = [h for h in r.headers if h[0] not in ("reason", "message")]
            headers += [("reason", r.reason.encode()), ("message", r.message.encode()), ("stage", b"landing")]
            futures.append(await self.producer.send(topic, value=r.value, key=r.key, headers=headers))
        await asyncio.gather(*futures)
        self.dead_lettered += len(rejected)
        for r in rejected:
            log.warning("dead-lettered a record (%s): %s", r.reason, r.message)

    async def _maybe_reload(self) -> None:
        """Pick up feeds applied and schema versions registered since the worker started."""
        if time.monotonic() - self._last_reload < 10.0:
            return
        self._last_reload = time.monotonic()
        async with self.pool.acquire() as conn:
            feeds = await load_feeds(conn)
        before = {t: f.schema_id for t, f in self.feeds.items()}
        after = {f.row.kafka_topic: f.schema_id for f in feeds}
        if before == after:
            return
        self._use_feeds(feeds)
        if set(before) != set(after):
            await self.admin.ensure_topics(self._topic_specs())
            assert self._consumer is not None
            self._consumer.subscribe(sorted(self.feeds), listener=_SeekToStoredOffsets(self))

    async def _rebuild(self) -> None:
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._consumer.stop(), 10)
            except Exception as exc:
                log.warning("old consumer did not stop cleanly: %r", exc)
        await asyncio.sleep(1)
        try:
            await self.admin.ensure_topics(self._topic_specs())
        except Exception as exc:
            log.warning("cannot recreate topics yet: %r", exc)
        await self._start_consumer()
