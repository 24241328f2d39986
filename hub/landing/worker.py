"""The landing worker: a Kafka consumer group member writing feed topics into feed tables.

Offsets live in the database, stored with the rows in one transaction (writer.py); on
every partition assignment the worker seeks to them. Kafka's committed offsets are not
used (on the local broker they vanish on a restart).

What keeps every row exactly once:
- one transaction for rows and offsets; rows are idempotent on (device_id, time);
- offsets are fenced: stored only if still what this worker started from (a worker that
  lost a partition in a rebalance cannot move it), and revocation waits for the batch in
  flight;
- the broker epoch (epoch.py): before storing offsets the worker checks that the broker
  still holds the log they refer to; if it lost it (a restarted local broker), stored
  offsets go back to 0 for the new log, so no new record is skipped; what the old log
  held beyond them is counted as lost and recorded in `hub.land_events`;
- a partition whose log is shorter than its stored offset (recreated topic) is read from
  its start; a gap in a log is counted and recorded;
- one batch is written while the next is fetched and its rows are built (the database and
  this process work at once); the next batch's offsets are worked out only once the write
  before it is applied, and a batch fetched before partitions were positioned again (a
  rebalance, a fence, a reset) is fetched again from the stored offsets rather than written.

Database or Kafka down: the batch is retried with backoff (capped) and nothing new is
taken; a clean stop is honoured while retrying. A row the database refuses is
dead-lettered with reason `refused_by_database` and the rest of its batch lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hub.catalog import store as catalog
from hub.catalog.runtime import FeedRuntime, load_feeds, schema_by_id
from hub.catalog.store import FeedRow
from hub.catalog.topics import feed_topic_specs
from hub.kafka import KafkaAdmin, TopicSpec, client_options
from hub.landing import epoch as epochs
from hub.landing.broker_memory import free_landed_topics, is_local_broker
from hub.landing.events import record_event
from hub.landing.retry import KAFKA_CHECK_FAILED, NOT_NOW, TRANSIENT, Retry, Stopping
from hub.landing.rows import Rejected, RowBuilder
from hub.landing.writer import (
    OffsetMove,
    TableBatch,
    WriteResult,
    ensure_offsets,
    use_epoch_timestamps,
    write_batch,
)
from hub.schema.avro import FeedSchema
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.land")

T = TypeVar("T")


@dataclass
class _Built:
    """The rows of one fetched batch, built before its offsets are worked out."""

    partitions: set[TopicPartition]
    batches: list[TableBatch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: LandingWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.partitions_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.partitions_assigned(list(assigned))


class LandingWorker:
    def __init__(self, settings: HubSettings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        # What this worker did (read by tests, `hub bench` and logs).
        self.landed = 0  # rows inserted
        self.duplicates = 0  # rows already in the table (a record delivered again)
        self.dead_lettered = 0
        self.broker_resets = 0  # times the broker had lost the log the stored offsets refer to
        self.records_missing = 0  # offsets absent from a log (a gap), e.g. deleted by retention
        self.records_lost = 0  # at most this many were lost with a broker's log (in resets this worker started)
        self.fenced = 0  # batches whose offsets another worker (or a reset) had moved meanwhile
        self.topics_recreated = 0  # to free the local broker's memory
        self.assigned: set[TopicPartition] = set()
        self.epoch: epochs.Epoch | None = None
        self._expected: dict[TopicPartition, int] = {}  # stored offset this worker continues from
        self._pending: set[TopicPartition] = set()  # assigned, not yet positioned at the stored offset
        self._schemas: dict[int, FeedSchema | None] = {}
        # Held from the moment a batch's offsets are worked out until its write is applied (by the
        # write task, which releases it): rebalances, resets and repositioning wait for it.
        self._land_lock = asyncio.Lock()
        self._writing: asyncio.Task[None] | None = None  # the batch being written while the next is built
        self._met_landed: set[tuple[str, str]] = set()  # tables whose last batch met rows already landed
        self._positions = 0  # bumped whenever partitions are positioned other than by landing a batch
        self._stopping = asyncio.Event()
        self._retrying = Retry(self._stopping, settings.land_retry_max_s, self._expire_pool)
        self._last_reload = time.monotonic()
        self._last_topic_check = time.monotonic()
        self._last_free = time.monotonic()
        self._freeing: asyncio.Task[int] | None = None  # a check for fully landed topics, beside the loop
        self._consumer: AIOKafkaConsumer | None = None
        self._local_broker = False
        self.feeds: dict[str, FeedRuntime] = {}
        self.builders: dict[str, RowBuilder] = {}
        self._signatures: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> LandingWorker:
        s, ep = self.settings, self.endpoints
        self.pool = await asyncpg.create_pool(ep.database_url, min_size=1, max_size=3, init=use_epoch_timestamps)
        admin: KafkaAdmin | None = None
        try:
            async with self.pool.acquire() as conn:
                await catalog.ensure_catalog(conn)
                feeds = await load_feeds(conn)
                await self._use_feeds(conn, feeds)
            self.admin = admin = await KafkaAdmin(s, ep.kafka_bootstrap).__aenter__()
            await self.admin.ensure_topics(self._topic_specs())
            if self.settings.land_check_broker_epoch:
                async with self.pool.acquire() as conn:
                    self.epoch, reset = await epochs.establish(conn, self.admin, s)
                if reset is not None:
                    self._count_reset(reset, "while no landing worker ran")
            self.producer = AIOKafkaProducer(**client_options(s, ep.kafka_bootstrap), acks="all")
            await self.producer.start()
        except BaseException:
            if admin is not None:
                await admin.__aexit__(None, None, None)
            await self.pool.close()
            raise
        self._local_broker = is_local_broker(s, ep)
        await self._start_consumer()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        try:
            await self._finish_freeing()
            await self._stop_consumer()
            try:
                await asyncio.wait_for(self.producer.stop(), self.settings.land_kafka_timeout_s)
            except (TimeoutError, KafkaError) as e:
                log.warning("dead-letter producer did not stop cleanly: %r", e)
            await self.admin.__aexit__(None, None, None)
        finally:
            await self.pool.close()

    async def run(self, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self._watch(stop))
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Stopping:
                    break
            with contextlib.suppress(Stopping):
                await self._settle()
        finally:
            watcher.cancel()
            task, self._writing = self._writing, None
            if task is not None:  # run() was cancelled or failed: the write in flight goes too
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _settle(self) -> None:
        """Wait for the batch being written, if any (its failure is raised here)."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    # --- feeds -------------------------------------------------------------------------

    async def _use_feeds(self, conn: asyncpg.Connection, feeds: list[FeedRuntime]) -> None:
        self.feeds = {f.row.kafka_topic: f for f in feeds}
        builders: dict[str, RowBuilder] = {}
        signatures: dict[str, str] = {}
        for topic, f in self.feeds.items():
            table = await catalog.table_columns(conn, f.row.table_schema, f.row.table_name)
            missing = [c.name for c in f.schema.columns if c.name not in table]
            if missing:
                log.warning(
                    "%s.%s lacks columns %s of schema version %s: they are not landed until `hub apply` adds them",
                    f.row.table_schema, f.row.table_name, missing, f.row.schema_version,
                )  # fmt: skip
            builders[topic] = RowBuilder(f.schema, self._schema_cached, [c for c in table if c not in missing])
            signatures[topic] = ",".join(f"{name} {col.sql_type}" for name, col in sorted(table.items()))
            self._schemas.setdefault(f.schema_id, f.schema)
        self.builders = builders
        self._signatures = signatures

    def _topic_specs(self) -> list[TopicSpec]:
        return feed_topic_specs(self.settings, (f.row for f in self.feeds.values()))

    def _schema_cached(self, schema_id: int) -> FeedSchema | None:
        return self._schemas.get(schema_id)

    async def reload(self) -> None:
        """Re-read the catalog: feeds applied and schema versions registered since the last look."""
        self._last_reload = time.monotonic()

        async def read() -> list[FeedRuntime]:
            async with self.pool.acquire() as conn:
                feeds = await load_feeds(conn)
                before = {t: (f.schema_id, tuple(self.builders[t].columns)) for t, f in self.feeds.items()}
                await self._use_feeds(conn, feeds)
                after = {t: (f.schema_id, tuple(self.builders[t].columns)) for t, f in self.feeds.items()}
                if before != after:
                    log.info("catalog changed: landing %d feeds, schema ids %s", len(after), sorted(after.items()))
                return feeds

        before_topics = set(self.feeds)
        await self._retrying("read the catalog", read)
        if set(self.feeds) != before_topics:
            await self._retrying("create topics", lambda: self.admin.ensure_topics(self._topic_specs()))
            if self._consumer is not None:
                self._consumer.subscribe(sorted(self.feeds), listener=_SeekToStoredOffsets(self))

    # --- the consumer ------------------------------------------------------------------

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
        if self.feeds:
            consumer.subscribe(sorted(self.feeds), listener=_SeekToStoredOffsets(self))
        self._consumer = consumer

    async def _stop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self.assigned.clear()
        self._expected.clear()
        self._pending.clear()
        self._positions += 1
        if consumer is not None:
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

    async def _rebuild(self) -> None:
        """A new consumer (after a Kafka error the old one could not get over)."""
        await self._stop_consumer()
        await self._retrying("create topics", lambda: self.admin.ensure_topics(self._topic_specs()))
        await self._retrying("start a consumer", self._start_consumer)

    async def partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Wait for the batch in flight, so that the next owner starts from its stored offset;
        # bounded, because a batch waiting for the database would hold up the whole group
        # (its offsets are fenced anyway).
        try:
            await asyncio.wait_for(self._land_lock.acquire(), 30)
            locked = True
        except TimeoutError:
            locked = False
        try:
            self._positions += 1
            for tp in revoked:
                self.assigned.discard(tp)
                self._expected.pop(tp, None)
                self._pending.discard(tp)
        finally:
            if locked:
                self._land_lock.release()

    async def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned |= set(assigned)
        self._pending |= set(assigned)
        log.info("assigned %d partitions: %s", len(assigned), sorted(assigned))
        try:
            async with self._land_lock:
                await self._position_pending(retry=False)
        except NOT_NOW as exc:  # the next step tries again, before fetching
            log.warning("cannot read stored offsets yet (%r); retrying before the next fetch", exc)

    async def _position_pending(self, retry: bool = True) -> None:
        """Seek newly assigned (or fenced) partitions to their stored offsets."""
        if not self._pending or self._consumer is None:
            return
        check_epoch = self.settings.land_check_broker_epoch
        if check_epoch and not await self._run(retry, "check the broker epoch", self._epoch_ok):
            await self._broker_reset(retry)  # every stored offset back to 0, every partition pending
        tps = sorted(self._pending)

        async def read() -> dict[tuple[str, int], int]:
            async with self.pool.acquire() as conn:
                return await ensure_offsets(conn, [(tp.topic, tp.partition) for tp in tps])

        stored = await self._run(retry, "read stored offsets", read)
        current = self._consumer.assignment()
        self._positions += 1
        for tp in tps:
            self._pending.discard(tp)
            if tp not in current:
                continue
            offset = stored[(tp.topic, tp.partition)]
            self._consumer.seek(tp, offset)
            self._expected[tp] = offset

    # --- one batch ---------------------------------------------------------------------

    async def step(self) -> int:
        """Fetch one batch and land it; returns the number of records fetched."""
        if time.monotonic() - self._last_reload >= self.settings.catalog_reload_s:
            await self.reload()
        if self._consumer is None:
            await self._retrying("start a consumer", self._start_consumer)
        assert self._consumer is not None
        if self._pending:
            await self._settle()
            async with self._land_lock:
                await self._position_pending()
        positions = self._positions
        try:
            # Bounded: during a rebalance getmany waits for the assignment, however long the
            # broker takes to come back, and the worker must still notice a stop meanwhile.
            data = await asyncio.wait_for(
                self._consumer.getmany(
                    timeout_ms=self.settings.land_flush_ms, max_records=self.settings.land_batch_size
                ),
                max(1.0, 5 * self.settings.land_flush_ms / 1000),
            )
        except TimeoutError:
            await self._settle()
            await self._idle()
            return 0
        except KafkaError as exc:
            log.warning("Kafka fetch failed (%r): rebuilding the consumer", exc)
            await self._settle()
            await self._rebuild()
            return 0
        data = {tp: records for tp, records in data.items() if records}
        # Rows are built while the previous batch is being written: the database and this process
        # work at once. Offsets are worked out only once that write is applied.
        built = await self._prepare(data)
        await self._settle()
        await self._check_positions(data)
        if not data:
            await self._idle()
            return 0
        n = sum(len(v) for v in data.values())
        await self.land(data, built, positions)
        await self._maybe_free_broker_memory()  # under a steady stream too, not only when idle
        return n

    async def _check_positions(self, data: dict[TopicPartition, list[Any]]) -> None:
        """Notice a log shorter than the stored offset (topic recreated, broker restarted) and gaps."""
        assert self._consumer is not None
        shorter = []
        for tp, expected in list(self._expected.items()):
            hw = self._consumer.highwater(tp)
            first = data[tp][0].offset if data.get(tp) else None
            if (hw is not None and hw < expected) or (first is not None and first < expected):
                shorter.append(tp)
            elif first is not None and first > expected:
                missing = first - expected
                self.records_missing += missing
                log.warning("%s[%d]: offsets %d..%d are not in the log any more", tp.topic, tp.partition,
                            expected, first - 1)  # fmt: skip
                where = f"partition {tp.partition}: offsets {expected}..{first - 1}"
                await self._event("records-missing", tp.topic, missing, f"{where} absent from the log")
        if not shorter:
            return
        for tp in shorter:
            data.pop(tp, None)
        async with self._land_lock:
            await self._log_shorter(shorter)

    async def _log_shorter(self, tps: list[TopicPartition]) -> None:
        assert self._consumer is not None
        if self.settings.land_check_broker_epoch and not await self._retrying("check the broker epoch", self._epoch_ok):
            await self._broker_reset()
            await self._position_pending()
            return

        async def read() -> dict[tuple[str, int], int]:
            async with self.pool.acquire() as conn:
                return await ensure_offsets(conn, [(tp.topic, tp.partition) for tp in tps])

        stored = await self._retrying("read stored offsets", read)
        self._positions += 1
        for tp in tps:
            if tp not in self._expected:
                continue
            offset = stored[(tp.topic, tp.partition)]
            hw = self._consumer.highwater(tp) or 0
            if offset <= hw:
                # Someone already set the offset back (the topic was recreated to free memory): follow it.
                self._consumer.seek(tp, offset)
                self._expected[tp] = offset
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
            await self._retrying("set an offset back", functools.partial(self._rewind, tp, offset, detail))
            self._consumer.seek(tp, 0)
            self._expected[tp] = 0

    async def _rewind(self, tp: TopicPartition, old: int, detail: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE hub.land_offsets SET next_offset = 0, log_end = NULL, updated_at = now()
                   WHERE topic = $1 AND kafka_partition = $2 AND next_offset = $3""",
                tp.topic,
                tp.partition,
                old,
            )
            await record_event(conn, "log-truncated", tp.topic, None, detail)

    async def land(self, data: dict[TopicPartition, list[Any]], built: _Built, positions: int) -> None:
        """Start writing `data` (rows `built` from it beforehand) once the batch before is written.

        `positions` is `_positions` when `data` was fetched: if partitions were positioned since,
        the data may not continue from the stored offsets; it is fetched again instead.
        """
        await self._land_lock.acquire()
        try:
            if positions != self._positions:
                assert self._consumer is not None
                for tp in data:
                    if tp in self._expected:
                        self._consumer.seek(tp, self._expected[tp])
                self._land_lock.release()
                return
            kept = {tp: r for tp, r in data.items() if tp in self._expected}
            if not kept:
                self._land_lock.release()
                return
            if built.partitions != set(kept):  # some were revoked or repositioned meanwhile
                built = await self._prepare(kept)
            moves = self._moves(kept)
        except BaseException:
            self._land_lock.release()
            raise
        assert self._writing is None, "the batch before was not settled"
        self._writing = asyncio.create_task(self._write(kept, built, moves), name="land-write")
        # Released however the write ends, even cancelled before it started; before `_settle` wakes up.
        self._writing.add_done_callback(lambda _task: self._land_lock.release())

    async def _write(self, data: dict[TopicPartition, list[Any]], built: _Built, moves: dict[Any, OffsetMove]) -> None:
        """Write one batch and apply the outcome to this worker's positions (under `_land_lock`)."""
        batches, rejected = built.batches, built.rejected
        epoch_ok = True
        if self.settings.land_check_broker_epoch:
            epoch_ok = await self._retrying("check the broker epoch", self._epoch_ok)
        epoch = self.epoch.epoch if self.epoch is not None else None

        async def write() -> WriteResult:
            async with self.pool.acquire() as conn:
                return await write_batch(conn, batches, moves if epoch_ok else {}, rejected, self._dead_letter, epoch)

        result = await self._retrying("write a batch", write)
        self._met_landed = (self._met_landed - {(b.schema, b.table) for b in batches}) | result.met_landed
        self.landed += result.inserted
        self.duplicates += result.duplicates
        self.dead_lettered += result.dead_lettered
        for tp in data:
            key = (tp.topic, tp.partition)
            if key in result.stored and tp in self._expected:
                self._expected[tp] = moves[key].next
        if not epoch_ok or result.epoch_changed:
            await self._broker_reset()
            return
        for key, found in result.fenced.items():
            tp = TopicPartition(*key)
            if tp in self._expected:
                self.fenced += 1
                self._positions += 1
                log.info("%s[%d]: stored offset is %s, not %d: positioning there again",
                         tp.topic, tp.partition, found, moves[key].expected)  # fmt: skip
                del self._expected[tp]
                self._pending.add(tp)

    async def _prepare(self, data: dict[TopicPartition, list[Any]]) -> _Built:
        """The rows of `data`, once every schema id in it is known (new ones may mean a catalog reload)."""
        await self._learn_schema_ids(data)
        return self._build_rows(data)

    def _moves(self, data: dict[TopicPartition, list[Any]]) -> dict[tuple[str, int], OffsetMove]:
        assert self._consumer is not None
        return {
            (tp.topic, tp.partition): OffsetMove(
                self._expected[tp], records[-1].offset + 1, self._consumer.highwater(tp)
            )
            for tp, records in data.items()
        }

    def _build_rows(self, data: dict[TopicPartition, list[Any]]) -> _Built:
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, records in data.items():
            by_topic[tp.topic].extend(records)
        built = _Built(set(data))
        for topic, records in by_topic.items():
            feed = self.feeds.get(topic)
            if feed is None:  # no longer a feed of the catalog: nothing to land
                continue
            rows = self.builders[topic].build(records)
            built.rejected += rows.rejected
            built.batches.append(
                TableBatch(
                    feed.row.partner_id,
                    feed.row.name,
                    feed.row.table_schema,
                    feed.row.table_name,
                    rows,
                    self._signatures.get(topic, ""),
                    copy_first=(feed.row.table_schema, feed.row.table_name) not in self._met_landed,
                )
            )
        return built

    async def _learn_schema_ids(self, data: dict[TopicPartition, list[Any]]) -> None:
        """Look up schema ids not seen before; a new one may be a version applied since: re-read the catalog."""
        unknown = set()
        for records in data.values():
            for r in records:
                value = r.value
                if value and len(value) >= 5 and value[0] == 0:
                    sid = int.from_bytes(value[1:5], "big")
                    if sid not in self._schemas:
                        unknown.add(sid)
        if not unknown:
            return

        async def lookup() -> dict[int, FeedSchema | None]:
            async with self.pool.acquire() as conn:
                return {sid: await schema_by_id(conn, sid) for sid in sorted(unknown)}

        found = await self._retrying("look up schema ids", lookup)
        self._schemas.update(found)
        if any(found.values()):
            await self.reload()

    async def _dead_letter(self, rejected: list[Rejected]) -> None:
        """Send to the dead-letter topic and wait for the broker's acknowledgement (bounded)."""
        topic = self.settings.kafka_dead_letter_topic

        async def send() -> None:
            futures = []
            for r in rejected:
                headers = [h for h in r.headers if h[0] not in ("reason", "message", "stage")]
                headers += [("reason", r.reason.encode()), ("message", r.message.encode()), ("stage", b"landing")]
                futures.append(await self.producer.send(topic, value=r.value, key=r.key, headers=headers))
            await asyncio.gather(*futures)

        await asyncio.wait_for(send(), self.settings.land_kafka_timeout_s)
        for r in rejected:
            log.warning("dead-lettered %s[%d]@%d (%s): %s", r.topic, r.partition, r.offset, r.reason, r.message)

    # --- the broker epoch --------------------------------------------------------------

    async def _epoch_ok(self) -> bool:
        if self.epoch is None:
            return False
        topics = await asyncio.wait_for(self.admin.topics(), self.settings.land_kafka_timeout_s)
        return self.epoch.marker_topic in topics

    async def _broker_reset(self, retry: bool = True) -> None:
        """The broker lost the log our offsets refer to: start (or adopt) a new epoch; reposition every partition."""
        old = self.epoch

        async def establish() -> tuple[epochs.Epoch, epochs.Reset | None]:
            await self.admin.ensure_topics(self._topic_specs())
            async with self.pool.acquire() as conn:
                return await epochs.establish(conn, self.admin, self.settings)

        new, reset = await self._run(retry, "start a new broker epoch", establish)
        self.epoch = new
        if reset is not None:
            self._count_reset(reset, f"epoch {old.epoch if old else '-'} -> {new.epoch}")
        else:
            self.broker_resets += 1
            log.warning("the Kafka broker lost its log; another worker started epoch %s: adopted", new.epoch)
        self._positions += 1
        for tp in list(self._expected):
            del self._expected[tp]
            self._pending.add(tp)  # positioned at the (reset) stored offsets before the next fetch

    def _count_reset(self, reset: epochs.Reset, when: str) -> None:
        self.broker_resets += 1
        self.records_lost += reset.records_lost
        log.warning(
            "the Kafka broker lost its log (%s): %d stored offsets set back to 0 and the new log is landed from its "
            "start; up to %d records it held had not been landed and are lost (see hub.land_events)",
            when, reset.offsets_reset, reset.records_lost,
        )  # fmt: skip

    # --- between batches ---------------------------------------------------------------

    async def _idle(self) -> None:
        now = time.monotonic()
        if now - self._last_topic_check >= 5.0:
            self._last_topic_check = now
            try:  # a restarted local broker forgot our topics: create them again with their settings
                created = await asyncio.wait_for(
                    self.admin.ensure_topics(self._topic_specs()), self.settings.land_kafka_timeout_s
                )
                if created:
                    log.warning("created missing Kafka topics: %s", created)
            except KAFKA_CHECK_FAILED as exc:
                log.warning("cannot check Kafka topics: %r", exc)
        await self._maybe_free_broker_memory()

    async def _maybe_free_broker_memory(self) -> None:
        """Every `land_free_broker_memory_every_s`, recreate the fully landed topics (local broker only).

        The check runs as a task beside this loop: it holds off ingest's sends to a topic (the
        topic lock) and waits for the landing workers, this one included, to land what the topic
        still holds. So it is not spent on a topic this worker knows it is behind on (its last
        fetch saw more than it landed); such a topic is looked at after a later batch.
        """
        s = self.settings
        if not (s.land_free_broker_memory and self._local_broker):
            return
        if self._freeing is not None and not self._freeing.done():
            return
        if time.monotonic() - self._last_free < s.land_free_broker_memory_every_s:
            return
        await self._settle()  # the batch in flight counts as landed once it is
        behind = {tp.topic for tp in self._pending}
        if self._consumer is not None:
            for tp, expected in self._expected.items():
                hw = self._consumer.highwater(tp)
                if hw is not None and expected < hw:
                    behind.add(tp.topic)
        feeds = [f.row for topic, f in self.feeds.items() if topic not in behind]
        if not feeds:
            return
        self._last_free = time.monotonic()
        self._freeing = asyncio.create_task(self.free_broker_memory(feeds), name="land-free-broker-memory")
        self._freeing.add_done_callback(_log_failure)

    async def _finish_freeing(self) -> None:
        """Let a check under way finish (it may have deleted a topic and not yet created it again)."""
        if self._freeing is None or self._freeing.done():
            return
        try:
            await asyncio.wait_for(self._freeing, 30)
        except Exception as exc:
            log.warning("the check for fully landed topics did not finish: %r", exc)

    async def free_broker_memory(self, feeds: list[FeedRow] | None = None) -> int:
        """Recreate the fully landed feed topics (local broker only); returns how many were recreated."""
        try:
            async with self.pool.acquire() as conn:
                outcomes = await free_landed_topics(
                    conn, self.settings, self.endpoints, feeds or [f.row for f in self.feeds.values()]
                )
        except TRANSIENT as exc:
            log.warning("cannot free broker memory now: %r", exc)
            return 0
        recreated = {o.topic for o in outcomes if o.recreated}
        for o in outcomes:
            log.debug("%s: %s (%d records)", o.topic, "recreated" if o.recreated else o.reason, o.records)
        if recreated:
            # Their stored offsets are 0 now: read our partitions of them from there before the next fetch.
            async with self._land_lock:
                self._positions += 1
                for tp in [tp for tp in self._expected if tp.topic in recreated]:
                    del self._expected[tp]
                    self._pending.add(tp)
        self.topics_recreated += len(recreated)
        return len(recreated)

    # --- retries -----------------------------------------------------------------------

    async def _event(self, kind: str, topic: str | None, records: int | None, detail: str) -> None:
        async def write() -> None:
            async with self.pool.acquire() as conn:
                await record_event(conn, kind, topic, records, detail)

        await self._retrying(f"record a {kind} event", write)

    async def _run(self, retry: bool, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await (self._retrying(what, fn) if retry else fn())

    async def _expire_pool(self) -> None:
        await self.pool.expire_connections()

    @property
    def retries(self) -> int:
        """Transient failures (database or Kafka unavailable) waited out and retried."""
        return self._retrying.count
