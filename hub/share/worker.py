"""The share worker: every agreement in force with `kafka` or `mqtt` delivery, as a live stream of its consumer.

A member of the share group reads the feed topics of raw streams (its share of their partitions)
in lanes (lanes.py: one per delay), projects each record for every stream of the lane
(projection.py: fields, devices, pseudonyms, exactly as the consumer's SQL view), and writes it to
`share.<consumer>.<provider>.<feed>` (Avro, Confluent wire format, the projected schema registered
under `<topic>-value`) and/or `share/<consumer>/<provider>/<feed>/<device>` (JSON, QoS 1). Once
Kafka and the MQTT broker acknowledged everything a batch produced, the lane's positions and the
streams' counters are stored in PostgreSQL in one transaction (store.py), fenced like landing's:
a crash repeats records, with the same keys, and never skips one.

Aggregate streams are emitted window by window from the consumer's aggregate view (windows.py,
window_output.py).
Agreements are re-read every `share_reload_s`: a new agreement's stream starts, and a revoked or
expired one stops, without a restart; an ended stream's Kafka topic is deleted and its consumer's
MQTT session ended. A record that does not project (a schema version without a granted field) goes
to the dead-letter topic naming the agreement, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition

from hub.agreement import names
from hub.agreement import streams as stream_rules
from hub.agreement.streams import Stream
from hub.agreement.world import load_world
from hub.catalog import store as catalog
from hub.catalog.runtime import FeedRuntime, load_feeds, schema_by_id
from hub.kafka import KafkaAdmin, is_local_broker
from hub.outage import Outages
from hub.retriable import retriable
from hub.schema.wire import WireEncoder
from hub.settings import Endpoints, HubSettings
from hub.share import identity, memory, store
from hub.share import metrics as share_metrics
from hub.share.batch import Route, Sharer, Sink
from hub.share.lanes import Lane, delayed_consumer, group_consumer
from hub.share.outputs import KafkaOut, MqttOut, dead_letter_headers, share_topic_spec
from hub.share.projection import NotProjectable, Projector, aggregate_schema
from hub.share.window_output import Outputs, emit_due_windows

log = logging.getLogger("hub.share")

NOW = "now"
# How often a lane compares its stored positions while a log ends before its position: landing recreates a
# feed topic once it is landed and shared (hub/landing/broker_memory.py), and its stored positions go back to 0
# when producers may go on; until the lane follows, the records sent meanwhile wait.
SHORTER_LOG_CHECK_S = 0.05


async def _stored(
    conn: asyncpg.Connection, lane: str, tps: Iterable[TopicPartition], epoch: str | None
) -> dict[TopicPartition, int]:
    """`store.stored` for partitions of any topics: where `lane` continues in each."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in tps:
        by_topic[tp.topic].append(tp.partition)
    found: dict[TopicPartition, int] = {}
    for topic, parts in by_topic.items():
        for p, offset in (await store.stored(conn, lane, topic, parts, epoch)).items():
            found[TopicPartition(topic, p)] = offset
    return found


class ShareWorker:
    def __init__(self, settings: HubSettings, endpoints: Endpoints, index: int = 0) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.index = index  # of this worker on its host: its client id (identity.py)
        # What this worker did (read by tests, `hub bench` and logs).
        self.shared = 0  # records written to share topics (each stream and protocol counts once)
        self.dead_lettered = 0
        self.windows = 0  # aggregate windows emitted
        self.fenced = 0
        self.active: dict[str, Stream] = {}
        self.projectors: dict[str, Projector] = {}
        self.encoders: dict[str, WireEncoder] = {}
        self.lanes: dict[str, Lane] = {}
        self.routes: dict[tuple[str, str], list[Route]] = {}  # (lane, feed topic) -> its raw streams
        self.feeds: dict[tuple[str, str], FeedRuntime] = {}
        self.epoch: str | None = None
        self.assigned: set[TopicPartition] = set()
        self.outages = Outages(log)
        self._signature: object = None
        self._subscribed: set[str] = set()
        self._lock = asyncio.Lock()
        self._last_reload = self._last_windows = 0.0
        self._last_free = time.monotonic()
        self.local = is_local_broker(settings, endpoints.kafka_bootstrap)  # share topics in memory: memory.py

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> ShareWorker:
        s, ep = self.settings, self.endpoints
        self.pool = await asyncpg.create_pool(ep.database_url, min_size=0, max_size=3)
        async with contextlib.AsyncExitStack() as opened:
            opened.push_async_callback(self.pool.close)
            async with self.pool.acquire() as conn:
                await catalog.ensure_catalog(conn)
            self.admin = await opened.enter_async_context(KafkaAdmin(s, ep.kafka_bootstrap))
            self.kafka = await opened.enter_async_context(KafkaOut(s, ep.kafka_bootstrap))
            self.identity = await identity.provision(s, ep, self.index)
            opened.push_async_callback(identity.remove, s, ep, self.identity)
            self.mqtt = MqttOut(self.identity.address, self.identity.client_id, identity.tls_ca(s))
            self.sharer = Sharer(Sink(self.kafka.add, self.mqtt.publish, self._dead_letter))
            await asyncio.to_thread(self.mqtt.start)
            opened.push_async_callback(asyncio.to_thread, self.mqtt.stop)
            await self.admin.ensure_topics([share_topic_spec(s, s.kafka_dead_letter_topic)])
            await self.kafka.know(s.kafka_dead_letter_topic)
            self.group = group_consumer(s, ep, self.identity.client_id)
            await self.group.start()
            opened.push_async_callback(self.group.stop)
            self.lanes[NOW] = Lane(NOW, self.group)
            await self.reload()
            opened.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for lane in self.lanes.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lane.consumer.stop(), 10)
        try:
            await self.kafka.__aexit__(None, None, None)
            await self.admin.__aexit__(None, None, None)
            await asyncio.to_thread(self.mqtt.stop)
            await identity.remove(self.settings, self.endpoints, self.identity)
        finally:
            await self.pool.close()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                await self.step()
                backoff = 0.2
            except Exception as exc:
                if not retriable(exc):
                    raise
                self.outages.failed("share records", exc)
                await self._reset_outputs()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def _reset_outputs(self) -> None:
        """After a failure nothing of the batch was stored: every lane reads again from its stored positions."""
        self.kafka.drop()
        self.mqtt.drop()
        async with self._lock:
            for lane in self.lanes.values():
                lane.repend()

    # --- agreements ----------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read agreements and feeds: start new streams, stop ended ones."""
        self._last_reload = time.monotonic()
        async with self.pool.acquire() as conn:
            world = await load_world(conn)
            feeds = {f.key: f for f in await load_feeds(conn)}
        now = datetime.now(UTC)
        wanted = stream_rules.wanted(world)
        active = {
            s.id: s
            for s in wanted
            if stream_rules.in_force(s, world, now) and (s.clause.provider, s.clause.feed) in feeds
        }
        signature = (frozenset(active.values()), tuple(sorted((k, f.schema_id) for k, f in feeds.items())))
        if signature == self._signature:
            return
        ended = [s for sid, s in self.active.items() if sid not in active]
        first = self._signature is None
        self._signature = signature
        self.feeds = feeds
        for f in feeds.values():
            self.sharer.schemas.setdefault(f.schema_id, f.schema)
        async with self._lock:
            await self._use(list(active.values()))
        for s in ended:
            await self._end(s)
        if first:  # ended while no share worker ran: their topics go now
            await self._delete_topics([s for s in wanted if s.id not in active and s.agreement.revoked_at is not None])
        if active or ended:
            log.info("sharing %d streams%s", len(active), f"; ended {', '.join(s.id for s in ended)}" if ended else "")

    async def _use(self, active: list[Stream]) -> None:
        s = self.settings
        async with self.pool.acquire() as conn:
            keys = await store.pseudonym_keys(conn, [x.agreement.id for x in active if x.clause.pseudonymise])
            projectors, encoders = {}, {}
            for x in active:
                feed = self.feeds[x.clause.provider, x.clause.feed]
                try:
                    if x.clause.aggregate:
                        schema = aggregate_schema(x)
                    else:
                        p = Projector(x, feed.schema, keys.get(x.agreement.id))
                        projectors[x.id] = p
                        schema = p.avro
                except NotProjectable as exc:
                    log.error("stream %s cannot run: %s", x.id, exc)
                    continue
                if x.kafka:
                    encoders[x.id] = WireEncoder(await store.register(conn, x.subject, schema), schema)
            by_lane: dict[tuple[str, str], list[Route]] = defaultdict(list)
            for x in active:
                if x.id in projectors:
                    feed_topic = self.feeds[x.clause.provider, x.clause.feed].row.kafka_topic
                    by_lane[x.lane, feed_topic].append(Route(x, projectors[x.id], encoders.get(x.id)))
            await store.keep_lanes(conn, set(by_lane))
        topics = [x.topic for x in active if x.kafka and (x.id in encoders)]
        await self.admin.ensure_topics([share_topic_spec(s, t) for t in topics])
        for t in topics:
            await self.kafka.know(t)
        self.active = {x.id: x for x in active if x.id in projectors or x.clause.aggregate}
        self.projectors, self.encoders, self.routes = projectors, encoders, dict(by_lane)
        lane_topics: dict[str, set[str]] = defaultdict(set)
        for lane_name, topic in by_lane:
            lane_topics[lane_name].add(topic)
        for name in [n for n in self.lanes if n != NOW and n not in lane_topics]:
            await self.lanes.pop(name).consumer.stop()
        for name, topics_of in lane_topics.items():
            if name not in self.lanes:
                consumer = delayed_consumer(s, self.endpoints)
                await consumer.start()
                self.lanes[name] = Lane(name, consumer)
            if self.lanes[name].topics != topics_of:
                self.lanes[name].topics = topics_of
                self.lanes[name].take(self.assigned)
        self.lanes[NOW].topics = lane_topics.get(NOW, set())
        self._follow_assignment()
        subscribe = {t for _lane, t in by_lane}
        if subscribe != self._subscribed:
            self._subscribed = subscribe
            if subscribe:
                self.group.subscribe(sorted(subscribe), listener=_Rebalances(self))
            else:
                self.group.unsubscribe()
                self._assigned(set())

    async def _end(self, stream: Stream) -> None:
        """A stream stopped (revoked, expired, withdrawn): its consumer's MQTT session is ended, its topic deleted."""
        if stream.mqtt and stream.org is not None:
            await identity.disconnect_consumer(self.settings, self.endpoints, stream.org)
        await self._delete_topics([stream])
        log.info("stream %s ended", stream.id)

    async def _delete_topics(self, ended: list[Stream]) -> None:
        doomed = {s.topic for s in ended if s.kafka} - {s.topic for s in self.active.values()}
        if doomed:
            await self.admin.delete_topics(sorted(doomed & await self.admin.topics()))

    # --- partitions ------------------------------------------------------------------------

    def _assigned(self, tps: set[TopicPartition]) -> None:
        self.assigned = set(tps)
        for lane in self.lanes.values():
            lane.take(self.assigned)
            if lane.name != NOW:
                lane.consumer.assign(sorted(lane.owned))
                lane.repend()
        self._follow_assignment()

    def _follow_assignment(self) -> None:
        """The group consumer reads only the partitions of topics its own (`now`) lane has streams on."""
        now_lane = self.lanes[NOW]
        idle = [tp for tp in self.group.assignment() if tp.topic not in now_lane.topics]
        if idle:
            self.group.pause(*idle)
        busy = [tp for tp in self.group.assignment() if tp.topic in now_lane.topics]
        if busy:
            self.group.resume(*busy)

    async def _position(self, lane: Lane) -> None:
        if not lane.pending:
            return
        async with self.pool.acquire() as conn:
            self.epoch = await store.current_epoch(conn)
            stored = await _stored(conn, lane.name, lane.pending, self.epoch)
        for tp, offset in stored.items():
            if tp in lane.consumer.assignment():
                lane.consumer.seek(tp, offset)
                lane.expected[tp] = offset
            lane.pending.discard(tp)
        lane.generation += 1

    async def _check_stored(self, lane: Lane) -> None:
        """While a lane reads nothing, or a log is shorter than its position: reposition partitions whose stored
        position moved (a recreated topic)."""
        lane.checked_at = time.monotonic()
        if not lane.expected:
            return
        async with self.pool.acquire() as conn:
            stored = await _stored(conn, lane.name, lane.expected, await store.current_epoch(conn))
        moved = lane.moved(stored)
        if moved:
            self.fenced += 1
            log.info("lane %s: stored positions moved (a recreated topic, another worker): positioning %s again",
                     lane.name, [f"{tp.topic}[{tp.partition}]" for tp in moved])  # fmt: skip
            lane.repend(moved)

    # --- one step ----------------------------------------------------------------------------

    async def step(self) -> int:
        if time.monotonic() - self._last_reload >= self.settings.share_reload_s:
            await self.reload()
        if time.monotonic() - self._last_windows >= 1.0:
            self._last_windows = time.monotonic()
            await self._emit_windows()
        if self.local and time.monotonic() - self._last_free >= self.settings.share_free_every_s:
            self._last_free = time.monotonic()
            await self._free_memory()
        n = 0
        for lane in list(self.lanes.values()):
            async with self._lock:
                await self._position(lane)
            generation = lane.generation
            if lane.name == NOW and not self._subscribed:
                continue
            try:
                data = await lane.fetch(self.settings.share_flush_ms, self.settings.share_batch_size)
            except TimeoutError:
                data = {}
            shorter = lane.log_shorter()
            if shorter or not data:
                every = SHORTER_LOG_CHECK_S if shorter else self.settings.share_idle_check_s
                if time.monotonic() - lane.checked_at >= every:
                    async with self._lock:
                        await self._check_stored(lane)
            if not data:
                continue
            async with self._lock:
                if generation != lane.generation:
                    for tp in data:
                        if tp in lane.expected:
                            lane.consumer.seek(tp, lane.expected[tp])
                    continue
                n += await self._share(lane, data)
        return n

    async def _share(self, lane: Lane, data: dict[TopicPartition, list[Any]]) -> int:
        now = time.time()
        at = datetime.now(UTC)
        unknown = self.sharer.unknown_ids(r.value for records in data.values() for r in records)
        if unknown:
            async with self.pool.acquire() as conn:
                for sid in sorted(unknown):
                    self.sharer.learn(sid, await schema_by_id(conn, sid))
        moves: list[store.Move] = []
        shared: dict[str, store.Shared] = {}
        for tp, records in data.items():
            expected = lane.expected.get(tp)
            if expected is None:
                continue
            if records[-1].offset < expected:  # a shorter log: topic recreated, or the broker lost its log
                lane.repend([tp])
                continue
            # a stream whose end passed since the last reload shares nothing more
            routes = [x for x in self.routes.get((lane.name, tp.topic), ()) if x.stream.agreement.in_force(at)]
            done = self.sharer.share(records, expected, routes, lane.delay.total_seconds(), now, shared)
            if done.hold is not None:
                lane.hold(tp, *done.hold)
            if done.last is not None:
                moves.append(store.Move(lane.name, tp.topic, tp.partition, expected, done.last + 1))
        if not moves:
            return 0
        log.debug("lane %s: %s", lane.name, [(m.topic, m.partition, m.expected, m.new) for m in moves])
        async with self.pool.acquire() as conn:
            async with memory.producing(conn, self.kafka.pending_topics() if self.local else ()):
                await self.kafka.flush()
            await self.mqtt.flush()
            fenced = await store.store_or_fenced(conn, moves, shared, self.epoch)
        if fenced:
            self.fenced += 1
            log.info("positions moved meanwhile (rebalance, recreated topic or broker epoch): positioning again")
            for each in self.lanes.values():
                each.repend()
            return 0
        share_metrics.count(shared)
        for m in moves:
            lane.expected[TopicPartition(m.topic, m.partition)] = m.new
        n = sum(x.records for x in shared.values())
        self.shared += n
        self.dead_lettered += sum(x.dead_lettered for x in shared.values())
        return n

    def _dead_letter(self, x: Stream, r: Any, message: str) -> None:
        headers = dead_letter_headers(x, message)
        self.kafka.add(self.settings.kafka_dead_letter_topic, r.key or b"", r.value or b"", headers)

    async def _free_memory(self) -> None:
        """The local broker keeps share topics in memory: recreate those read to the end, or at the bound."""
        for x in [x for x in self.active.values() if x.kafka]:
            async with self.pool.acquire() as conn:
                o = await memory.free_share_topic(conn, self.settings, self.endpoints.kafka_bootstrap, x.topic,
                                                  names.share_topic_prefix(x.org))  # fmt: skip
            log.debug("%s: %s", x.topic, o.reason)

    # --- aggregate windows -----------------------------------------------------------------

    async def _emit_windows(self) -> None:
        grace = timedelta(seconds=self.settings.share_window_grace_s)
        for x in [x for x in self.active.values() if x.clause.aggregate]:
            feed = self.feeds.get((x.clause.provider, x.clause.feed))
            if feed is None:
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                done = await emit_due_windows(
                    conn, x, feed.row.kafka_topic, grace, self.settings.share_window_backfill,
                    Outputs(self.kafka, self.mqtt, self.encoders.get(x.id), self.local),
                )  # fmt: skip
            self.windows += done.windows
            self.shared += done.records


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ShareWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.worker._lock:
            self.worker._assigned(self.worker.assigned - set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.worker._lock:
            self.worker._assigned(set(self.worker.group.assignment()))
        log.info("assigned %d partitions: %s", len(assigned), sorted(assigned))
