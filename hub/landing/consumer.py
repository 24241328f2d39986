"""A landing worker's membership of the landing group: a Kafka consumer whose partitions are positioned at the
offsets stored in the database (Kafka's committed offsets are not used: on the local broker they vanish).

Rebalances wait for the batch being written (`land_lock`), so the next owner of a partition
starts from its stored offset; a partition is fetched from only once it is positioned.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from hub.kafka import KafkaAdmin, client_options
from hub.landing import metrics as land_metrics
from hub.landing.feeds import LandingFeeds
from hub.landing.positions import Positions
from hub.landing.recovery import Recovery
from hub.landing.retry import NOT_NOW, Retry
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.land")


class GroupConsumer:
    def __init__(
        self,
        settings: HubSettings,
        endpoints: Endpoints,
        admin: KafkaAdmin,
        positions: Positions,
        feeds: LandingFeeds,
        recovery: Recovery,
        retrying: Retry,
        land_lock: asyncio.Lock,
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.admin = admin
        self.positions = positions
        self.feeds = feeds
        self.recovery = recovery
        self.retrying = retrying
        self.land_lock = land_lock
        self.consumer: AIOKafkaConsumer | None = None
        self.client_id = "hub-land"

    async def start(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            **client_options(s, self.endpoints.kafka_bootstrap),
            group_id=s.land_group,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.land_fetch_wait_ms,
            fetch_min_bytes=s.land_fetch_min_bytes,
            max_poll_records=s.land_batch_size,
            fetch_max_bytes=4 * 1024 * 1024,
            max_partition_fetch_bytes=1024 * 1024,
        )
        await consumer.start()
        self.consumer = consumer
        self.subscribe()

    def subscribe(self) -> None:
        """Follow the feeds' topics (again, after a catalog reload changed them)."""
        if self.consumer is not None and self.feeds.topics:
            self.consumer.subscribe(self.feeds.topics, listener=_Rebalances(self))

    async def stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        self.positions.clear()
        if consumer is None:
            return
        try:
            await asyncio.wait_for(consumer.stop(), 10)
        except Exception as exc:
            log.warning("consumer did not stop cleanly: %r", exc)
        except asyncio.CancelledError:
            # aiokafka's fetcher lets a CancelledError out of stop() when the broker is down.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled ourselves
            log.warning("consumer did not stop cleanly: its fetcher was cancelled (broker unreachable)")

    async def rebuild(self) -> None:
        """A new consumer (after a Kafka error the old one could not get over)."""
        await self.stop()
        await self.retrying(
            "create topics", lambda: self.admin.ensure_topics(self.feeds.topic_specs(self.settings)), "Kafka"
        )
        await self.retrying("start a consumer", self.start, "Kafka")

    async def fetch(self) -> dict[TopicPartition, list[Any]]:
        """One batch (partitions with records only); raises TimeoutError if a rebalance holds it up too long."""
        if self.consumer is None:
            await self.retrying("start a consumer", self.start)
        assert self.consumer is not None
        s = self.settings
        # Bounded: during a rebalance getmany waits for the assignment, however long the broker
        # takes to come back, and the worker must still notice a stop meanwhile.
        data = await asyncio.wait_for(
            self.consumer.getmany(timeout_ms=s.land_flush_ms, max_records=s.land_batch_size),
            max(1.0, 5 * s.land_flush_ms / 1000),
        )
        return {tp: records for tp, records in data.items() if records}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp) if self.consumer is not None else None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self.consumer is not None:
            self.consumer.seek(tp, offset)

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        # Wait for the batch in flight, so that the next owner starts from its stored offset;
        # bounded, because a batch waiting for the database would hold up the whole group
        # (its offsets are fenced anyway).
        try:
            await asyncio.wait_for(self.land_lock.acquire(), 30)
            locked = True
        except TimeoutError:
            locked = False
        try:
            self.positions.revoke(revoked)
            land_metrics.forget(revoked)
        finally:
            if locked:
                self.land_lock.release()

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        self.positions.assign(assigned)
        log.info("assigned %d partitions: %s", len(assigned), sorted(assigned))
        try:
            async with self.land_lock:
                await self.position_pending(retry=False)
        except NOT_NOW as exc:  # the next step tries again, before fetching
            self.retrying.outages.failed("read stored offsets (tried again before the next fetch)", exc, "PostgreSQL")

    async def position_pending(self, retry: bool = True) -> None:
        """Seek newly assigned (or fenced) partitions to their stored offsets (the caller holds `land_lock`)."""
        if not self.positions.pending or self.consumer is None:
            return
        if not await self.recovery.epoch_intact(retry):
            await self.recovery.broker_reset(retry)  # every stored offset back to 0, every partition pending
        tps = sorted(self.positions.pending)
        read = functools.partial(self.recovery.stored, tps)
        stored = await (self.retrying("read stored offsets", read) if retry else read())
        for tp, offset in self.positions.position(tps, stored, self.consumer.assignment()):
            self.consumer.seek(tp, offset)


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, group: GroupConsumer) -> None:
        self.group = group

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.group.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.group.assigned(list(assigned))
