"""Lanes: raw streams with the same delay read a feed topic together, from one stored position per partition.

The `now` lane is the share group's own consumer (its partitions are this worker's share of the
group). A delayed lane is a consumer of its own, assigned the same partitions, that only takes a
record once its event time is older than the delay: it stops at the first younger record of a
partition, seeks back to it and pauses that partition until it is old enough. So a long delay is
held in Kafka (the lane's position simply stays behind), never in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.agreement.streams import lane_delay
from hub.kafka import client_options
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.share")


@dataclass
class Lane:
    name: str
    consumer: AIOKafkaConsumer
    topics: set[str] = field(default_factory=set)  # topics with a stream in this lane
    expected: dict[TopicPartition, int] = field(default_factory=dict)  # where it continues (stored)
    pending: set[TopicPartition] = field(default_factory=set)  # assigned, not positioned yet
    paused_until: dict[TopicPartition, float] = field(default_factory=dict)
    generation: int = 0  # bumped whenever partitions are positioned other than by storing a batch
    checked_at: float = 0.0  # when its stored positions were last compared with `expected` while idle

    @property
    def delay(self) -> timedelta:
        return lane_delay(self.name)

    @property
    def owned(self) -> set[TopicPartition]:
        return set(self.expected) | self.pending

    def take(self, tps: Iterable[TopicPartition]) -> None:
        """This lane reads exactly `tps` (of its topics) from now on; new ones wait to be positioned."""
        wanted = {tp for tp in tps if tp.topic in self.topics}
        gone = self.owned - wanted
        if gone:
            self.generation += 1
        for tp in gone:
            self.expected.pop(tp, None)
            self.pending.discard(tp)
            self.paused_until.pop(tp, None)
        self.pending |= wanted - self.owned

    def repend(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Position these (default: all) again from what is stored."""
        tps = set(self.owned if tps is None else tps) & self.owned
        if tps:
            self.generation += 1
        assigned = self.consumer.assignment()
        for tp in tps:
            self.expected.pop(tp, None)
            if self.paused_until.pop(tp, None) is not None and tp in assigned:
                self.consumer.resume(tp)  # read again from its stored position, held again if still too young
            self.pending.add(tp)

    def moved(self, stored: dict[TopicPartition, int]) -> list[TopicPartition]:
        """Partitions whose stored position is not where this lane continues: landing recreated the topic
        (positions back to 0), or another worker stored there. The consumer would not find out by itself:
        on the local broker it keeps its old position and reads nothing until the new log passes it."""
        return sorted((tp for tp, offset in stored.items() if tp in self.expected and self.expected[tp] != offset),
                      key=lambda tp: (tp.topic, tp.partition))  # fmt: skip

    def log_shorter(self) -> bool:
        """A partition's log ends before where this lane continues: its topic was recreated (landing freed the
        local broker's memory) or the broker restarted. Its consumer's last fetch shows it (the highwater)."""
        for tp, offset in self.expected.items():
            end = self.consumer.highwater(tp)
            if end is not None and end < offset:
                return True
        return False

    def hold(self, tp: TopicPartition, offset: int, until: float) -> None:
        """Records from `offset` on are not old enough yet: read them again once `until` has come."""
        self.consumer.seek(tp, offset)
        self.consumer.pause(tp)
        self.paused_until[tp] = until

    def resume_due(self) -> None:
        now = time.time()
        due = [tp for tp, t in self.paused_until.items() if t <= now]
        for tp in due:
            del self.paused_until[tp]
        if due:
            self.consumer.resume(*due)

    async def fetch(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self.expected and self.name != "now":  # the group's own consumer must poll to stay in the group
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.resume_due()
        data = await asyncio.wait_for(
            self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records), max(1.0, 5 * timeout_ms / 1000)
        )
        return {tp: rs for tp, rs in data.items() if rs and tp in self.expected}


def delayed_consumer(settings: HubSettings, endpoints: Endpoints) -> AIOKafkaConsumer:
    """A lane's own consumer: no group (its partitions follow the share group's assignment)."""
    return AIOKafkaConsumer(
        **client_options(settings, endpoints.kafka_bootstrap),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.share_fetch_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


def group_consumer(settings: HubSettings, endpoints: Endpoints, client_id: str) -> AIOKafkaConsumer:
    """The share group's member. Its own client id: the local broker was seen handing two members that
    shared aiokafka's default client id the same partitions (and nobody the others)."""
    return AIOKafkaConsumer(
        **client_options(settings, endpoints.kafka_bootstrap),
        client_id=client_id,
        group_id=settings.share_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.share_fetch_wait_ms,
        max_poll_records=settings.share_batch_size,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
