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

Where each piece lives: partition positions and fencing (positions.py, pure), feeds and schema
versions (feeds.py), the broker epoch (epoch.py), freeing the local broker's memory
(broker_memory.py), dead letters (dead_letter.py), one transaction per batch (writer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from hub import worker_registry
from hub.catalog import store as catalog
from hub.catalog.runtime import load_feeds, schema_by_id
from hub.kafka import KafkaAdmin
from hub.landing import dead_letter_rows
from hub.landing import epoch as epochs
from hub.landing import metrics as land_metrics
from hub.landing.broker_memory import MemoryFreeing
from hub.landing.consumer import GroupConsumer
from hub.landing.dead_letter import DeadLetterSender
from hub.landing.feeds import Built, LandingFeeds
from hub.landing.kafka_commits import KafkaCommits
from hub.landing.positions import Positions
from hub.landing.recovery import Recovery
from hub.landing.reports import PartnerReports
from hub.landing.retry import Retry, Stopping
from hub.landing.writer import OffsetMove, WriteResult, use_epoch_timestamps, write_batch
from hub.retriable import retriable
from hub.settings import Endpoints, HubSettings

log = logging.getLogger("hub.land")

Data = dict[TopicPartition, list[Any]]


class LandingWorker:
    def __init__(self, settings: HubSettings, endpoints: Endpoints, index: int = 0) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.index = index
        # Its Kafka client id: which member of the group it is, in Kafka's tools (hub/worker_registry.py).
        self.client_id = worker_registry.worker_id("land", worker_registry.this_host(settings.worker_host), index)
        # What this worker did (read by tests, `hub bench` and logs).
        self.landed = 0  # rows inserted
        self.duplicates = 0  # records identical to a row already landed, sent twice by a device
        self.redelivered = 0  # records identical to a row already landed, the hub's own copies
        self.conflicts = 0  # records dead-lettered as duplicate_key
        self.dead_lettered = 0
        self.dead_letters_stored = 0  # dead letters (from ingest or landing) written to hub.dead_letters
        self.fenced = 0  # batches whose offsets another worker (or a reset) had moved meanwhile
        self.positions = Positions()
        self.feeds = LandingFeeds(settings.kafka_dead_letter_topic if settings.dead_letter_store else None)
        # Held from the moment a batch's offsets are worked out until its write is applied (by the
        # write task, which releases it): rebalances, resets and repositioning wait for it.
        self._land_lock = asyncio.Lock()
        self._writing: asyncio.Task[None] | None = None  # the batch being written while the next is built
        self._met_landed: set[tuple[str, str]] = set()  # tables whose last batch met rows already landed
        self._stopping = asyncio.Event()
        self._retrying = Retry(self._stopping, settings.land_retry_max_s, self._expire_pool)
        self._last_reload = self._last_topic_check = self._last_prune = time.monotonic()

    @property
    def assigned(self) -> set[TopicPartition]:
        return self.positions.assigned

    @property
    def broker_resets(self) -> int:
        """Times the broker had lost the log the stored offsets refer to (or a topic was recreated behind us)."""
        return self.recovery.broker_resets

    @property
    def records_lost(self) -> int:
        """Acknowledged records lost with a broker's log (counted exactly), in resets this worker started."""
        return self.recovery.records_lost

    @property
    def topics_recreated(self) -> int:
        """Feed topics this worker recreated to free the local broker's memory."""
        return self.memory.recreated

    @property
    def retries(self) -> int:
        """Transient failures (database or Kafka unavailable) waited out and retried."""
        return self._retrying.count

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> LandingWorker:
        s, ep = self.settings, self.endpoints
        # min_size=0: a pool with a floor reconnects in the background while the database is down, and logs
        # a traceback for each attempt; connections are opened when a batch needs one instead.
        self.pool = await asyncpg.create_pool(ep.database_url, min_size=0, max_size=3, init=use_epoch_timestamps)
        async with contextlib.AsyncExitStack() as opened:  # closes what is open when a later step fails
            opened.push_async_callback(self.pool.close)
            async with self.pool.acquire() as conn:
                await catalog.ensure_catalog(conn)
                await self.feeds.use(conn, await load_feeds(conn))
            self.admin = await opened.enter_async_context(KafkaAdmin(s, ep.kafka_bootstrap))
            await self.admin.ensure_topics(self.feeds.topic_specs(s))
            watch = epochs.EpochWatch(s, self.admin, self.pool) if s.land_check_broker_epoch else None
            self.recovery = Recovery(s, self.pool, self._retrying, self.positions, self.feeds, watch)
            await self.recovery.started()
            self.dead_letters = await opened.enter_async_context(DeadLetterSender(s, ep.kafka_bootstrap))
            opened.pop_all()
        self.reports = PartnerReports(s, ep.mqtt())
        self.memory = MemoryFreeing(s, ep, self.pool)
        self.group = GroupConsumer(
            s, ep, self.admin, self.positions, self.feeds, self.recovery, self._retrying, self._land_lock
        )
        self.group.client_id = self.client_id
        self.commits = KafkaCommits(lambda: self.group.consumer, s.land_kafka_timeout_s)
        await self.group.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        try:
            await self.memory.finish()
            await self.commits.close()
            await self.group.stop()
            await self.dead_letters.__aexit__(None, None, None)
            await self.admin.__aexit__(None, None, None)
        finally:
            await asyncio.to_thread(self.reports.close)
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

    async def reload(self) -> None:
        """Re-read the catalog: feeds applied and schema versions registered since the last look."""
        self._last_reload = time.monotonic()

        async def read() -> None:
            async with self.pool.acquire() as conn:
                before = self.feeds.versions()
                await self.feeds.use(conn, await load_feeds(conn))
                after = self.feeds.versions()
                if before != after:
                    log.info("catalog changed: landing %d feeds, schema ids %s", len(after), sorted(after.items()))

        before_topics = self.feeds.topics
        await self._retrying("read the catalog", read)
        if self.feeds.topics != before_topics:
            await self._retrying(
                "create topics", lambda: self.admin.ensure_topics(self.feeds.topic_specs(self.settings)), "Kafka"
            )
            self.group.subscribe()

    # --- one batch ---------------------------------------------------------------------

    async def step(self) -> int:
        """Fetch one batch and land it; returns the number of records fetched."""
        if time.monotonic() - self._last_reload >= self.settings.catalog_reload_s:
            await self.reload()
        if self.positions.pending:
            await self._settle()
            async with self._land_lock:
                await self.group.position_pending()
        generation = self.positions.generation
        try:
            data = await self.group.fetch()
        except TimeoutError:
            await self._settle()
            await self._idle()
            return 0
        except KafkaError as exc:
            self._retrying.outages.failed("fetch records (the consumer is rebuilt)", exc, "Kafka")
            await self._settle()
            await self.group.rebuild()
            return 0
        # Rows are built while the previous batch is being written: the database and this process
        # work at once. Offsets are worked out only once that write is applied.
        built = await self._prepare(data)
        await self._settle()
        await self._check_positions(data)
        if not data:
            await self._idle()
            return 0
        n = sum(len(v) for v in data.values())
        await self.land(data, built, generation)
        await self._maybe_free_broker_memory()  # under a steady stream too, not only when idle
        await self._maybe_prune_dead_letters()
        return n

    async def _check_positions(self, data: Data) -> None:
        """Notice a log shorter than the stored offset (topic recreated, broker restarted) and gaps."""
        found = self.positions.check(data, self.group.highwater)
        await self.recovery.gaps(found.gaps)
        if not found.shorter:
            return
        for tp in found.shorter:
            data.pop(tp, None)
        async with self._land_lock:
            if await self.recovery.log_shorter(found.shorter, self.group):
                await self.group.position_pending()

    async def land(self, data: Data, built: Built, generation: int) -> None:
        """Start writing `data` (rows `built` from it beforehand) once the batch before is written.

        `generation` is the positions' generation when `data` was fetched: if partitions were
        positioned since, the data may not continue from the stored offsets; it is fetched again instead.
        """
        await self._land_lock.acquire()
        try:
            if generation != self.positions.generation:
                for tp in data:
                    if tp in self.positions.expected:
                        self.group.seek(tp, self.positions.expected[tp])
                self._land_lock.release()
                return
            kept = self.positions.kept(data)
            if not kept:
                self._land_lock.release()
                return
            if built.partitions != set(kept):  # some were revoked or repositioned meanwhile
                built = await self._prepare(kept)
            moves = self.positions.moves(kept, self.group.highwater)
        except BaseException:
            self._land_lock.release()
            raise
        assert self._writing is None, "the batch before was not settled"
        self._writing = asyncio.create_task(self._write(kept, built, moves), name="land-write")
        # Released however the write ends, even cancelled before it started; before `_settle` wakes up.
        self._writing.add_done_callback(lambda _task: self._land_lock.release())

    async def _write(self, data: Data, built: Built, moves: dict[Any, OffsetMove]) -> None:
        """Write one batch and apply the outcome to this worker's positions (under `_land_lock`)."""
        epoch_ok = await self.recovery.epoch_intact()
        epoch = self.recovery.epochs.epoch if self.recovery.epochs is not None else None
        feed_of = {t: (f.row.partner_id, f.row.name) for t, f in self.feeds.by_topic.items()}

        async def write() -> WriteResult:
            async with self.pool.acquire() as conn:
                return await write_batch(
                    conn,
                    built.batches,
                    moves if epoch_ok else {},
                    built.rejected,
                    self.dead_letters.send,
                    epoch.epoch if epoch is not None else None,
                    feed_of=feed_of,
                    dead_letters=built.dead_letters,
                )

        started = time.perf_counter()
        result = await self._retrying("write a batch", write)
        land_metrics.count_batch(result, sum(len(v) for v in data.values()), time.perf_counter() - started, moves)
        if self.settings.land_commit_kafka_offsets and result.stored:
            self.commits.offer({TopicPartition(*key): moves[key].next for key in result.stored})
        self._met_landed = (self._met_landed - {(b.schema, b.table) for b in built.batches}) | result.met_landed
        self.landed += result.inserted
        self.duplicates += result.duplicates
        self.redelivered += result.redelivered
        self.conflicts += len(result.conflicts)
        self.dead_lettered += result.dead_lettered
        self.dead_letters_stored += result.dead_letters_stored
        if result.conflicts:
            await asyncio.to_thread(self._report, result)
        self.positions.landed(data, result.stored, moves)
        if not epoch_ok or result.epoch_changed:
            await self.recovery.broker_reset()
            return
        for key, found in result.fenced.items():
            tp = TopicPartition(*key)
            if self.positions.fence(tp):
                self.fenced += 1
                log.info("%s[%d]: stored offset is %s, not %d: positioning there again",
                         tp.topic, tp.partition, found, moves[key].expected)  # fmt: skip

    def _report(self, result: WriteResult) -> None:
        """Tell each partner about its `duplicate_key` records (after the commit; best effort, rate-limited)."""
        by_feed: dict[tuple[str, str], list[Any]] = {}
        for partner, feed, r in result.letters:
            if r.reason == "duplicate_key":
                by_feed.setdefault((partner, feed), []).append(r)
        for (partner, feed), records in by_feed.items():
            self.reports.report(partner, feed, records)

    async def _prepare(self, data: Data) -> Built:
        """The rows of `data`, once every schema id in it is known (new ones may mean a catalog reload)."""
        unknown = self.feeds.unknown_schema_ids(data)
        if unknown:

            async def lookup() -> dict[int, Any]:
                async with self.pool.acquire() as conn:
                    return {sid: await schema_by_id(conn, sid) for sid in sorted(unknown)}

            found = await self._retrying("look up schema ids", lookup)
            self.feeds.schemas.update(found)
            if any(found.values()):  # a version applied since the last look
                await self.reload()
        return self.feeds.build(data, self._met_landed)

    # --- the broker epoch --------------------------------------------------------------

    # --- between batches ---------------------------------------------------------------

    async def _idle(self) -> None:
        now = time.monotonic()
        if now - self._last_topic_check >= 5.0:
            self._last_topic_check = now
            try:  # a restarted local broker forgot our topics: create them again with their settings
                created = await asyncio.wait_for(
                    self.admin.ensure_topics(self.feeds.topic_specs(self.settings)), self.settings.land_kafka_timeout_s
                )
                if created:
                    log.warning("created missing Kafka topics: %s", created)
                self._retrying.outages.back("Kafka")
            except Exception as exc:
                if not retriable(exc):
                    raise
                self._retrying.outages.failed("check Kafka topics", exc, "Kafka")
        await self._maybe_free_broker_memory()
        await self._maybe_prune_dead_letters()

    async def _maybe_prune_dead_letters(self) -> None:
        """Bound hub.dead_letters by age and count, every `dead_letter_prune_every_s` (best effort)."""
        s = self.settings
        if not s.dead_letter_store or time.monotonic() - self._last_prune < s.dead_letter_prune_every_s:
            return
        self._last_prune = time.monotonic()
        try:
            async with self.pool.acquire() as conn:
                removed = await dead_letter_rows.prune(
                    conn, timedelta(days=s.dead_letter_retention_days), s.dead_letter_max_rows
                )
            if removed:
                log.info("pruned %d dead letters (older than %g days, or beyond %d)", removed,
                         s.dead_letter_retention_days, s.dead_letter_max_rows)  # fmt: skip
        except Exception as exc:
            if not retriable(exc):
                raise
            log.warning("cannot prune dead letters yet: %r", exc)

    async def _maybe_free_broker_memory(self) -> None:
        """Start a check for fully landed topics (local broker only), on the topics this worker is not behind on.

        Such a check waits for the landing workers, this one included, to land what a topic
        still holds, so it is not spent on a topic whose last fetch saw more than was landed;
        that one is looked at after a later batch.
        """
        if not self.memory.due():
            return
        await self._settle()  # the batch in flight counts as landed once it is
        behind = self.positions.behind(self.group.highwater)
        feeds = [f.row for topic, f in self.feeds.by_topic.items() if topic not in behind]
        if feeds:
            self.memory.start(feeds, self._topics_recreated)

    async def _topics_recreated(self, topics: set[str]) -> None:
        """Their stored offsets are 0 now: read our partitions of them from there before the next fetch."""
        async with self._land_lock:
            self.positions.repend_topics(topics)

    # --- retries -----------------------------------------------------------------------

    async def _expire_pool(self) -> None:
        await self.pool.expire_connections()
