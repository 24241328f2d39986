"""Bounding the local broker's memory: recreate feed topics whose records are all landed.

The local broker (Tansu) keeps every record in memory until its topic is deleted: it
ignores `retention.ms` and does not implement DeleteRecords, but DeleteTopics frees a
topic's memory at once (measured). So once every record of a feed topic is landed, the
topic can be deleted and created again empty, with its stored offsets set back to 0 in
the same step.

The danger is a record produced between the check ("every partition's stored offset equals
its log end") and the delete: the broker acknowledged it, the device got its PUBACK, and
the delete would lose it. Three locks close that window:

1. `pg_try_advisory_xact_lock(TOPIC_LOCK_SPACE, hashtext(topic))`, exclusive, held from the
   check until the offsets are reset and committed. Every ingest worker holds the shared
   form of this lock from before it hands a batch to the Kafka client until the broker
   acknowledged (or failed) every record of it (hub/ingest/topic_locks.py, with
   `hub.catalog.locks.producer_lock_sql`), so no record can be in flight inside the window, and a batch
   about to be sent waits until the topic is recreated. Landing only tries the lock: it
   skips a topic that is being sent to and tries again later.
2. With `HUB_LAND_FREE_BROKER_MEMORY_WHILE_INGESTING=false` (for producers that do not
   hold (1)), topics are recreated only while no ingest worker runs:
   `LOCK TABLE hub.resources IN SHARE MODE`, then no `mqtt-session` row may be `active`.
   An ingest worker records its session as active before it sends anything, and that
   write waits for this lock, so none can start sending inside the window either.
3. The topic's rows of `hub.land_offsets` are locked `FOR UPDATE`, so no landing worker
   moves an offset meanwhile; afterwards their stale offsets are fenced (see writer.py).

Under a steady stream a topic is hardly ever fully landed at the instant of a check. But
once (1) is held its log stops growing, so the check waits a moment (`catch_up_s`) for the
landing workers to land what is left before deciding; the worker runs it beside its own
loop, so it keeps landing its own partitions meanwhile. Producers wait for that long at
most, once every `land_free_broker_memory_every_s`.

The share workers read feed topics too (hub/share/): a topic is recreated only once every lane of
theirs (`hub.share_offsets`, locked with landing's rows) has shared every record, and their positions
go back to 0 with landing's; a share worker whose stored position moved is fenced and reads from there.

Feed topics only: the dead-letter topic (which landing also consumes, into hub.dead_letters) is
never recreated here; it grows only with rejected messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from hub.catalog.locks import TRY_RECREATE_SQL
from hub.catalog.store import FeedRow
from hub.kafka import client_options
from hub.kafka import is_local_broker as local_broker
from hub.landing.events import record_event
from hub.retriable import TRANSIENT
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.land.memory")


def is_local_broker(settings: HubSettings, endpoints: Endpoints) -> bool:
    """True when the Kafka endpoint is the local stack's broker (Tansu, memory only)."""
    return local_broker(settings, endpoints.kafka_bootstrap)


@dataclass(frozen=True)
class TopicOutcome:
    topic: str
    recreated: bool
    records: int  # records the topic held (freed when recreated)
    reason: str


async def log_ends(
    settings: HubSettings, bootstrap: str, topic: str, stored: dict[int, int], timeout_s: float = 5.0
) -> dict[int, int] | None:
    """Each partition's log end as a fetch from its stored offset reports it (the high watermark).

    None if the topic is unknown, a partition holds records at or past its stored offset,
    or a partition did not answer in time. ListOffsets is not used: the local broker can
    report up to one producer batch less than the real end there (measured).
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings, bootstrap), enable_auto_commit=False, fetch_max_wait_ms=50, group_id=None
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, stored.get(tp.partition, 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            data = await consumer.getmany(timeout_ms=100)
            if any(data.values()):
                return None
            ends = {tp.partition: consumer.highwater(tp) for tp in tps}
            if all(e is not None for e in ends.values()):
                return {p: int(e) for p, e in ends.items() if e is not None}
        return None
    finally:
        await consumer.stop()


async def free_landed_topics(
    conn: asyncpg.Connection,
    settings: HubSettings,
    endpoints: Endpoints,
    feeds: list[FeedRow],
    catch_up_s: float = 2.0,
) -> list[TopicOutcome]:
    """Recreate each feed topic that is fully landed and holds at least `land_free_broker_memory_min_records`.

    A topic whose lock is free is held (producers wait) for up to `catch_up_s` while the
    landing workers land what it still holds; it is skipped if they do not finish by then.
    """
    admin = AIOKafkaAdminClient(**client_options(settings, endpoints.kafka_bootstrap), request_timeout_ms=10_000)
    await admin.start()
    try:
        return [await _free_topic(conn, admin, settings, endpoints, f, catch_up_s) for f in feeds]
    finally:
        await admin.close()


async def _free_topic(
    conn: asyncpg.Connection,
    admin: AIOKafkaAdminClient,
    settings: HubSettings,
    endpoints: Endpoints,
    feed: FeedRow,
    catch_up_s: float,
) -> TopicOutcome:
    topic = feed.kafka_topic
    min_records = settings.land_free_broker_memory_min_records

    def skip(reason: str, records: int = 0) -> TopicOutcome:
        return TopicOutcome(topic, False, records, reason)

    async with conn.transaction():
        if not await conn.fetchval(TRY_RECREATE_SQL, topic):
            return skip("a producer is sending to it, or another worker is checking it")
        if not settings.land_free_broker_memory_while_ingesting:
            await conn.execute("LOCK TABLE hub.resources IN SHARE MODE")
            active = await conn.fetch(
                "SELECT name FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active' ORDER BY name"
            )
            if active:
                return skip(f"ingest workers are running ({', '.join(r['name'] for r in active)})")
        stored = await _stored_offsets(conn, topic)
        if sum(stored.values()) < min_records:  # fully landed, it would hold as many: spare the broker a look
            return skip(f"{sum(stored.values())} records landed, fewer than {min_records}", sum(stored.values()))
        # Producers holding the topic's lock now wait: its log no longer grows. Give the landing
        # workers (this one included: the check runs beside its loop) a moment to land the rest.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + catch_up_s
        while await log_ends(settings, endpoints.kafka_bootstrap, topic, stored) is None:
            if loop.time() >= deadline:
                return skip("not every record is landed yet")
            await asyncio.sleep(0.05)
            stored = await _stored_offsets(conn, topic)
        # The decision, with no landing worker moving an offset meanwhile.
        stored = await _stored_offsets(conn, topic, for_update=True)
        ends = await log_ends(settings, endpoints.kafka_bootstrap, topic, stored)
        if ends is None:
            return skip("not every record is landed yet")
        behind = {p: (stored.get(p, 0), e) for p, e in ends.items() if stored.get(p, 0) != e}
        if behind:
            return skip(f"stored offsets differ from the log ends: {behind}")
        # The share workers' lanes (hub/share/) must have shared every record too.
        unshared = await _share_behind(conn, topic, ends)
        if unshared:
            return skip(f"share streams have not shared every record yet: {unshared}")
        total = sum(ends.values())
        if total < min_records:
            return skip(f"holds {total} records, fewer than {min_records}", total)
        try:
            code = _error_code(await admin.delete_topics([topic]), "topic_error_codes", topic)
        except KafkaError as exc:
            return skip(f"cannot delete it: {exc!r}", total)
        if code not in (0, UnknownTopicOrPartitionError.errno):
            return skip(f"the broker refused to delete it (error code {code})", total)
        # Deleted: the offsets go back to 0 whatever happens next (a topic created again by
        # anyone starts at 0), so this transaction commits from here on.
        # Every record was landed: the landed position (base_offset + next_offset) carries on in the new
        # log, so a producer waiting for records of the old one still sees them landed.
        await conn.execute(
            """UPDATE hub.land_offsets SET base_offset = base_offset + next_offset, next_offset = 0, updated_at = now()
               WHERE topic = $1""",
            topic,
        )
        await conn.execute("UPDATE hub.share_offsets SET next_offset = 0, updated_at = now() WHERE topic = $1", topic)
        await record_event(
            conn,
            "topic-recreated",
            topic,
            total,
            f"all {total} records landed; topic deleted and created again empty to free the local broker's memory",
        )
        await _create_again(admin, topic, max(len(ends), feed.partitions), settings)
    log.info("recreated %s: its %d records were all landed", topic, total)
    return TopicOutcome(topic, True, total, "fully landed")


async def _share_behind(conn: asyncpg.Connection, topic: str, ends: dict[int, int]) -> dict[str, list[int]]:
    """Share lanes (hub.share_offsets, locked until this transaction ends) behind the log ends: lane -> partitions.

    A lane's row of another broker epoch counts as 0, as the share workers read it.
    """
    rows = await conn.fetch(
        """SELECT o.lane, o.kafka_partition,
                  CASE WHEN o.epoch IS NOT DISTINCT FROM b.epoch THEN o.next_offset ELSE 0 END AS next_offset
           FROM hub.share_offsets o LEFT JOIN hub.land_broker b ON true WHERE o.topic = $1 FOR UPDATE OF o""",
        topic,
    )
    behind: dict[str, list[int]] = {}
    lanes = {r["lane"] for r in rows}
    at = {(r["lane"], r["kafka_partition"]): int(r["next_offset"]) for r in rows}
    for lane in sorted(lanes):
        parts = [p for p, e in sorted(ends.items()) if at.get((lane, p), 0) != e]
        if parts:
            behind[lane] = parts
    return behind


async def _stored_offsets(conn: asyncpg.Connection, topic: str, for_update: bool = False) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT kafka_partition, next_offset FROM hub.land_offsets WHERE topic = $1"
        + (" FOR UPDATE" if for_update else ""),
        topic,
    )
    return {r["kafka_partition"]: int(r["next_offset"]) for r in rows}


async def _create_again(admin: AIOKafkaAdminClient, topic: str, partitions: int, settings: HubSettings) -> None:
    spec = NewTopic(
        topic,
        partitions,
        settings.kafka_replication_factor,
        topic_configs={"retention.ms": str(settings.kafka_retention_ms)},
    )
    for _attempt in range(20):
        try:
            code = _error_code(await admin.create_topics([spec]), "topic_errors", topic)
        except KafkaError as exc:
            log.warning("cannot create %s again yet (%r); retrying", topic, exc)
            await asyncio.sleep(0.25)
            continue
        if code in (0, TopicAlreadyExistsError.errno):
            return  # created (or someone, e.g. `hub stack up`, was quicker)
        log.warning("cannot create %s again yet (error code %d); retrying", topic, code)
        await asyncio.sleep(0.25)
    log.warning("could not create %s again; the next `hub stack up` or worker start creates it", topic)


def _error_code(response: Any, field: str, topic: str) -> int:
    """The error code the broker answered for `topic` in a CreateTopics / DeleteTopics response."""
    for entry in getattr(response, field, []):
        if entry[0] == topic:
            return int(entry[1])
    return -1


class MemoryFreeing:
    """Every `land_free_broker_memory_every_s`, one check for fully landed topics, as a task beside the landing loop.

    The check holds off ingest's sends to a topic (its lock) and waits for the landing workers,
    this one included, to land what the topic still holds; `on_recreated` gets the topics it
    recreated (their stored offsets are 0 now).
    """

    def __init__(self, settings: HubSettings, endpoints: Endpoints, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.pool = pool
        self.enabled = settings.land_free_broker_memory and is_local_broker(settings, endpoints)
        self.recreated = 0  # topics recreated by this worker
        self._task: asyncio.Task[int] | None = None
        self._last = time.monotonic()

    def due(self) -> bool:
        if not self.enabled or (self._task is not None and not self._task.done()):
            return False
        return time.monotonic() - self._last >= self.settings.land_free_broker_memory_every_s

    def start(self, feeds: list[FeedRow], on_recreated: Callable[[set[str]], Awaitable[None]]) -> None:
        self._last = time.monotonic()
        self._task = asyncio.create_task(self.free(feeds, on_recreated), name="land-free-broker-memory")
        self._task.add_done_callback(_log_failure)

    async def finish(self) -> None:
        """Let a check under way finish (it may have deleted a topic and not yet created it again)."""
        if self._task is None or self._task.done():
            return
        try:
            await asyncio.wait_for(self._task, 30)
        except Exception as exc:
            log.warning("the check for fully landed topics did not finish: %r", exc)

    async def free(self, feeds: list[FeedRow], on_recreated: Callable[[set[str]], Awaitable[None]]) -> int:
        """Recreate the fully landed topics of `feeds`; returns how many were recreated."""
        try:
            async with self.pool.acquire() as conn:
                outcomes = await free_landed_topics(conn, self.settings, self.endpoints, feeds)
        except TRANSIENT as exc:
            log.warning("cannot free broker memory now: %r", exc)
            return 0
        for o in outcomes:
            log.debug("%s: %s (%d records)", o.topic, "recreated" if o.recreated else o.reason, o.records)
        recreated = {o.topic for o in outcomes if o.recreated}
        if recreated:
            await on_recreated(recreated)
        self.recreated += len(recreated)
        return len(recreated)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
