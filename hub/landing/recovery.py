"""What a landing worker does when a log is not where its stored offsets say.

- The broker lost its log (a restarted local broker): a new epoch is started (or one another
  worker started is adopted), every stored offset goes back to 0 and every partition is
  positioned again; what the old log held beyond the stored offsets is counted as lost.
- A topic was recreated behind landing's back (its log ends before the stored offset): the
  partition is landed from its start, or follows an offset someone already set back.
- Offsets absent from a log (a gap): counted and recorded in `hub.land_events`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import asyncpg
from aiokafka import TopicPartition

from hub.landing import epoch as epochs
from hub.landing.events import record_event
from hub.landing.feeds import LandingFeeds
from hub.landing.lost import count_lost, record_lost
from hub.landing.positions import Gap, Positions
from hub.landing.retry import Retry
from hub.landing.writer import ensure_offsets
from hub.settings import HubSettings

log = logging.getLogger("hub.land")

T = TypeVar("T")


class Seeking(Protocol):
    """The consumer as recovery uses it (`GroupConsumer`)."""

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...


class Recovery:
    def __init__(
        self,
        settings: HubSettings,
        pool: asyncpg.Pool,
        retrying: Retry,
        positions: Positions,
        feeds: LandingFeeds,
        epoch_watch: epochs.EpochWatch | None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.retrying = retrying
        self.positions = positions
        self.feeds = feeds
        self.epochs = epoch_watch  # None: the broker epoch is not checked
        self.broker_resets = 0  # times the broker had lost the log the stored offsets refer to
        self.records_missing = 0  # offsets absent from a log (a gap), e.g. deleted by retention
        self.records_lost = 0  # acknowledged records lost with a broker's log (in resets this worker started)

    async def epoch_intact(self, retry: bool = True) -> bool:
        if self.epochs is None:
            return True
        return await self._run(retry, "check the broker epoch", self.epochs.intact)

    async def started(self) -> None:
        """Adopt the recorded epoch, or start one if the broker lost its log while no landing worker ran."""
        if self.epochs is not None:
            reset = await self.epochs.start()
            if reset is not None:
                self._count_reset(reset, "while no landing worker ran")

    async def broker_reset(self, retry: bool = True) -> None:
        """The broker lost the log our offsets refer to: start (or adopt) a new epoch; reposition every partition."""
        watch = self.epochs
        assert watch is not None
        specs = self.feeds.topic_specs(self.settings)
        old, reset = await self._run(retry, "start a new broker epoch", lambda: watch.renew(specs))
        new = watch.epoch.epoch if watch.epoch is not None else "-"
        if reset is not None:
            self._count_reset(reset, f"epoch {old.epoch if old else '-'} -> {new}")
        else:
            self.broker_resets += 1
            log.warning("the Kafka broker lost its log; another worker started epoch %s: adopted", new)
        self.positions.repend_all()  # positioned at the (reset) stored offsets before the next fetch

    def _count_reset(self, reset: epochs.Reset, when: str) -> None:
        self.broker_resets += 1
        self.records_lost += reset.records_lost
        log.warning(
            "the Kafka broker lost its log (%s): %d stored offsets set back to 0 and the new log is landed from its "
            "start; %d records acknowledged to devices had not been landed and are lost (see hub.land_events)",
            when, reset.offsets_reset, reset.records_lost,
        )  # fmt: skip

    async def gaps(self, gaps: list[Gap]) -> None:
        for tp, first_missing, missing in gaps:
            self.records_missing += missing
            last = first_missing + missing - 1
            log.warning("%s[%d]: offsets %d..%d are not in the log any more", tp.topic, tp.partition,
                        first_missing, last)  # fmt: skip
            where = f"partition {tp.partition}: offsets {first_missing}..{last}"
            await self.event("records-missing", tp.topic, missing, f"{where} absent from the log")

    async def log_shorter(self, tps: list[TopicPartition], consumer: Seeking) -> bool:
        """Logs that end before their stored offsets; True if that was a broker reset (positions are pending)."""
        if not await self.epoch_intact():
            await self.broker_reset()
            return True
        stored = await self.retrying("read stored offsets", functools.partial(self.stored, tps))
        for tp in tps:
            if tp not in self.positions.expected:
                continue
            offset = stored[(tp.topic, tp.partition)]
            hw = consumer.highwater(tp) or 0
            if offset <= hw:
                # Someone already set the offset back (the topic was recreated to free memory): follow it.
                consumer.seek(tp, offset)
                self.positions.follow(tp, offset)
                continue
            # The log ends before what was already landed: it was recreated without the hub
            # resetting its offsets. Land it from its start: store 0 (fenced by the old value).
            self.broker_resets += 1
            log.warning(
                "%s[%d]: the log ends at %d but %d records were landed: it was recreated; landing it from its "
                "start (rows already landed are kept; records the old log held beyond them are lost)",
                tp.topic, tp.partition, hw, offset,
            )  # fmt: skip
            detail = f"partition {tp.partition}: the log ends at {hw}, the stored offset was {offset}; set to 0"
            await self.retrying("set an offset back", functools.partial(self._rewind, tp, offset, detail))
            consumer.seek(tp, 0)
            self.positions.follow(tp, 0)
        return False

    async def stored(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The stored next offset of each partition (0 for one never landed)."""
        async with self.pool.acquire() as conn:
            return await ensure_offsets(conn, [(tp.topic, tp.partition) for tp in tps])

    async def _rewind(self, tp: TopicPartition, old: int, detail: str) -> None:
        """Land the partition from its start: acknowledged records the old log held beyond `old` are counted lost."""
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchval(
                "SELECT next_offset FROM hub.land_offsets WHERE topic = $1 AND kafka_partition = $2 FOR UPDATE",
                tp.topic,
                tp.partition,
            )
            if stored != old:
                return  # someone else moved it meanwhile
            epoch = await conn.fetchval("SELECT epoch FROM hub.land_broker")
            lost = await count_lost(conn, epoch, tp.topic, tp.partition) if epoch is not None else {}
            await record_lost(conn, lost)
            # The generation moves on: a producer waiting for records of the old log sends them again.
            await conn.execute(
                """UPDATE hub.land_offsets SET base_offset = base_offset + next_offset, next_offset = 0, log_end = NULL,
                       generation = generation + 1, updated_at = now()
                   WHERE topic = $1 AND kafka_partition = $2""",
                tp.topic,
                tp.partition,
            )
            n = sum(lost.values())
            await record_event(conn, "log-truncated", tp.topic, n, f"{detail}; {n} acknowledged records lost")
            self.records_lost += n

    async def event(self, kind: str, topic: str | None, records: int | None, detail: str) -> None:
        async def write() -> None:
            async with self.pool.acquire() as conn:
                await record_event(conn, kind, topic, records, detail)

        await self.retrying(f"record a {kind} event", write)

    async def _run(self, retry: bool, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await (self.retrying(what, fn) if retry else fn())
