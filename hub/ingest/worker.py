"""The ingest worker: MQTT messages in, Avro records (or dead letters) to Kafka, PUBACK once they are durable.

Per batch: drain the inbox filled by paho's thread, turn each message into a record for
its feed topic or the dead-letter topic (outgoing.py), send them as one Kafka record batch
per topic-partition under the feed topics' shared locks (kafka_send.py, topic_locks.py),
and only when every record is acknowledged (and the broker provably kept our topics
meanwhile) acknowledge the messages, in one of two modes (`HUB_INGEST_ACK`):

- `kafka`: PUBACK at once; the round trip that releases the topic locks has recorded the
  batch's counters and what it acknowledged (ack_ledger.py), so a broker that later loses
  its log loses an exactly counted number of acknowledged records;
- `landed` (the default on the local stack, whose broker keeps its log in memory only): the
  batch waits until landing has stored its records (landed_acks.py) while the next batches
  are sent; its counters are recorded with the PUBACK.

While Kafka or the database is down the batch is retried with backoff and nothing new is
processed: unacknowledged messages stay in the broker's session for us, so nothing is lost.
Memory: the worker stops reading from the broker at `ingest_max_inbox` messages in its inbox, or that
plus `ingest_max_in_flight` unacknowledged in all (mqtt_source.py), whatever the broker's own window.

Identity: the worker connects as `hub-ingest-<host>-<index>` with a login of its own, bound to that
client id and given a new password at every start (identity.py), and watches the broker's log for
a takeover of its session on a second, idle connection (takeover.py).

The worker subscribes to each partner's whole namespace (`partners/<id>/#`), so a message
on a topic no feed matches is dead-lettered (`unknown_topic`) rather than dropped unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter

import asyncpg

from hub import worker_registry
from hub.catalog import store as catalog
from hub.catalog.runtime import FeedRuntime, load_feeds
from hub.catalog.topics import feed_topic_specs
from hub.db import DATABASE_ERRORS, connect
from hub.errors import ServerUnavailable
from hub.ingest import ack_latency, identity
from hub.ingest import metrics as ingest_metrics
from hub.ingest.ack_ledger import COUNT_SQL, POLL_SQL, PRUNE_SQL, counter_args, landed
from hub.ingest.decode import FeedDecoder
from hub.ingest.kafka_send import KafkaSender, marker_spec
from hub.ingest.landed_acks import LandedAcks, Waiting, ack_mode
from hub.ingest.mqtt_source import Message, MqttSource
from hub.ingest.outgoing import UNKNOWN, ErrorReports, Outgoing, Preparer, Stats, mark_resent, partition_for
from hub.ingest.routes import FeedRoute, Router
from hub.ingest.takeover import TakeoverWatch
from hub.ingest.topic_locks import TopicLocks
from hub.kafka import TopicSpec
from hub.outage import Outages
from hub.schema.wire import WireEncoder
from hub.settings import Endpoints, HubSettings

__all__ = [
    "UNKNOWN",
    "ErrorReports",
    "IngestWorker",
    "Outgoing",
    "Stats",
    "build_routes",
    "marker_spec",
    "namespace_filters",
    "partition_for",
]

log = logging.getLogger("hub.ingest")

# How soon the catalog is read again when a message of a partner we do not know yet arrives.
RELOAD_SOON_S = 0.2


def namespace_filters(settings: HubSettings) -> list[str]:
    """One subscription to every partner's namespace: a topic no feed matches is still seen, and
    dead-lettered, and a partner applied a moment ago is delivered to us from its first message (the
    broker drops what nobody is subscribed to); the broker lets each partner publish only in its own."""
    return [f"{settings.mqtt_namespace_root}/#"]


def build_routes(feeds: list[FeedRuntime], settings: HubSettings) -> list[FeedRoute]:
    return [
        FeedRoute(
            partner_id=f.row.partner_id,
            feed=f.row.name,
            kafka_topic=f.row.kafka_topic,
            schema_id=f.schema_id,
            levels=tuple(f.row.mqtt_filter.split("/")),
            decoder=FeedDecoder(f.feed, f.schema.parsed, max_payload_bytes=settings.ingest_max_payload_bytes),
            encoder=WireEncoder(f.schema_id, f.schema.parsed),
        )
        for f in feeds
    ]


def _signature(feeds: list[FeedRuntime]) -> list[tuple[str, str, int, str]]:
    return sorted((f.row.partner_id, f.row.name, f.schema_id, json.dumps(f.row.config, sort_keys=True)) for f in feeds)


def _feed_of(feeds: list[FeedRuntime]) -> dict[str, tuple[str, str]]:
    """Kafka topic -> (partner, feed): the labels of the batch's metrics."""
    return {f.row.kafka_topic: (f.row.partner_id, f.row.name) for f in feeds}


def _topic_specs(settings: HubSettings, feeds: list[FeedRuntime]) -> list[TopicSpec]:
    return feed_topic_specs(settings, (f.row for f in feeds))


class IngestWorker:
    def __init__(
        self,
        settings: HubSettings,
        endpoints: Endpoints,
        index: int = 0,
        *,
        drain_only: bool = False,
        leave_timeout_s: float = 30.0,
        client_id: str | None = None,
    ):
        self.settings = settings
        self.endpoints = endpoints
        self.index = index
        # Draining may take over the session of an id this host would not make now (another version's).
        self.client_id = client_id or identity.worker_client_id(settings, index)
        self.drain_only = drain_only
        self.leave_timeout_s = leave_timeout_s
        self.stats = Stats()
        self.outages = Outages(log)  # the servers this worker waits for, logged once when away and once when back
        self.waiting = LandedAcks()
        self.latency = ack_latency.AckLatency()
        self._wake = asyncio.Event()
        self._last_flush = self._last_reload = self._last_prune = time.monotonic()
        self._stale: list[Waiting] = []  # batches whose log was lost: the step loop sends them again
        self._poller: asyncio.Task[None] | None = None
        self._abandoned = False  # a batch was given up unacknowledged: the session must be kept
        self.session_ended = False  # set on leaving: the broker session was ended (nothing left in it)

    def _note_subscribed(self) -> None:
        """The broker confirmed our subscription (paho's thread): recorded for the local stack's restart gate,
        which keeps partners out of a restarted broker until every ingest worker has subscribed again."""
        worker_registry.note_subscribed(self.settings.state_dir, "ingest", os.getpid(), time.time())

    def _wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._wake.set)

    @property
    def sent_batches(self) -> int:
        return self.sender.sent_batches

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> IngestWorker:
        s, ep = self.settings, self.endpoints
        # What is open when a later step fails (the MQTT broker refuses us, say) is closed again.
        async with contextlib.AsyncExitStack() as opened:
            self._claim = contextlib.ExitStack()
            self._claim.enter_context(identity.claim(s, self.client_id))  # no second process with our client id
            opened.callback(self._claim.close)
            self.db = await connect(ep.database_url)
            opened.push_async_callback(self.db.close)
            self.feeds = await load_feeds(self.db)
            self._feed_of = _feed_of(self.feeds)
            router = Router(build_routes(self.feeds, s))
            self.mode = ack_mode(s, ep)
            self.locks = TopicLocks(ep.database_url)
            opened.push_async_callback(self.locks.close)
            self.landed_db = TopicLocks(ep.database_url)  # the poller's own connection; it takes no lock
            opened.push_async_callback(self.landed_db.close)
            self.sender = KafkaSender(s, ep.kafka_bootstrap, self.index, _topic_specs(s, self.feeds), self.locks)
            self.sender.outages = self.outages
            await self.sender.start(ep.database_url)
            opened.push_async_callback(self.sender.stop, self.leave_timeout_s)
            loop = asyncio.get_running_loop()
            name = self.client_id
            filters = namespace_filters(s)
            previous = await self._recorded_filters(name)
            address, watch_address = await identity.provision_logins(s, ep, self.client_id, self.index, self.drain_only)
            self.source = MqttSource(
                address,
                name,
                filters,
                subscribe=not self.drain_only,
                unsubscribe_first=previous,
                keepalive_s=s.mqtt_keepalive_s,
                tls_ca=identity.tls_ca(s),
                wake=lambda: self._wake_threadsafe(loop),
                wake_every=s.ingest_batch_size,
                on_subscribed=self._note_subscribed,
                max_inbox=s.ingest_max_inbox,
                max_in_flight=s.ingest_max_in_flight,
            )
            self.preparer = Preparer(s, router, self.sender.partitions, self.stats, self.source.publish)
            self.watch: TakeoverWatch | None = None
            if watch_address is not None:
                self.watch = TakeoverWatch(watch_address, {name}, identity.tls_ca(s))
                await asyncio.to_thread(self.watch.start)
                opened.push_async_callback(asyncio.to_thread, self.watch.stop)
            await asyncio.to_thread(self.source.start)
            opened.push_async_callback(asyncio.to_thread, self.source.stop, False)  # the session keeps its messages
            if not self.drain_only:
                await catalog.set_resource(self.db, "mqtt-session", name, "active", json.dumps({"filters": filters}))
            if self.mode == "landed":
                self._poller = asyncio.create_task(self._poll_landed(), name="ingest-landed-acks")
            ingest_metrics.watch(
                lambda: len(self.source.inbox), lambda: max(0, self.source.outstanding - len(self.source.inbox))
            )
            opened.pop_all()
        log.info(
            "ingest worker %s (client id %s, acknowledging once %s): %d feeds, %s %s",
            self.index,
            self.client_id,
            "Kafka has the records" if self.mode == "kafka" else "the records are landed",
            len(self.feeds),
            "draining the session of" if self.drain_only else "subscribed to",
            filters,
        )
        return self

    async def _recorded_filters(self, name: str) -> list[str]:
        """The filters this client id's broker session was subscribed to when it last ran."""
        detail = await self.db.fetchval(
            "SELECT detail FROM hub.resources WHERE kind = 'mqtt-session' AND name = $1", name
        )
        try:
            filters = json.loads(detail)["filters"] if detail else []
        except (ValueError, KeyError, TypeError):
            return []
        return [str(f) for f in filters] if isinstance(filters, list) else []

    async def __aexit__(self, *exc: object) -> None:
        clean = exc[0] is None or exc[0] is asyncio.CancelledError
        try:
            if clean:
                self.session_ended = await self.leave_cleanly()
            else:
                self.source.stop(end_session=False)  # keep the session: a restart gets what it missed
        finally:
            if self._poller is not None:
                self._poller.cancel()
                with contextlib.suppress(BaseException):
                    await self._poller
            await self.sender.stop(self.leave_timeout_s)
            await self._flush_stats(force=True)
            await self.locks.close()
            await self.landed_db.close()
            await self.db.close()
            if self.watch is not None:
                await asyncio.to_thread(self.watch.stop)
            if self.session_ended:  # no login left behind (a new start makes them again)
                watching = self.watch.address.username if self.watch is not None else None
                await identity.remove_logins(self.settings, self.endpoints, self.client_id, watching)
            self._claim.close()

    async def leave_cleanly(self, quiet_s: float = 0.5) -> bool:
        """Leave the shared group, finish what was delivered to us, then end our broker session.

        Once the broker confirmed the unsubscribe it routes nothing new to us; what it had
        already queued for this session still arrives and is sent to Kafka and acknowledged
        before the session ends, so ending it loses nothing. The session is ended only when
        every message delivered on this connection was acknowledged; otherwise (a batch was
        abandoned, or Kafka takes none for `leave_timeout_s`) it is kept, out of the shared
        group, for this index's next worker or `drain_stale_sessions`, and this returns False.
        """
        leaving = asyncio.ensure_future(asyncio.to_thread(self.source.leave_group))
        self.waiting.last_progress = time.monotonic()
        try:
            while not self._abandoned:
                await asyncio.wait_for(self.step(), self.leave_timeout_s)
                if self.waiting.pending and time.monotonic() - self.waiting.last_progress > self.leave_timeout_s:
                    log.warning("stopping: %d messages are not landed after %.0f s (is landing running?)",
                                self.waiting.messages, self.leave_timeout_s)  # fmt: skip
                    self._abandoned = True
                    break
                quiet = time.time() - self.source.last_message_at > quiet_s
                if leaving.done() and not self.source.inbox and quiet and not self.waiting.pending:
                    break
        except TimeoutError:
            self._abandoned = True
        if not await leaving:
            log.warning("no UNSUBACK from the MQTT broker")
        outstanding = self.source.outstanding
        if self._abandoned or outstanding:
            log.warning(
                "keeping broker session %s: %d messages delivered to it are not acknowledged (Kafka down?)",
                self.client_id,
                outstanding,
            )
            await asyncio.to_thread(self.source.stop, False)
            return False
        await asyncio.to_thread(self.source.stop, True)
        await self._record_session("ended")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set; a batch under way then gets `leave_timeout_s` to finish.

        A batch Kafka cannot take (it is down) is then abandoned unacknowledged, so that a stop
        request is honoured; the session keeps its messages (see `leave_cleanly`).
        """
        stopped = asyncio.ensure_future(stop.wait())
        step: asyncio.Future[int] | None = None
        try:
            while not stop.is_set():
                step = asyncio.ensure_future(self.step())
                await asyncio.wait((step, stopped), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    try:
                        await asyncio.wait_for(step, self.leave_timeout_s)
                    except TimeoutError:
                        self._abandoned = True
                        log.warning(
                            "stopping: abandoned a batch Kafka did not take within %.0f s", self.leave_timeout_s
                        )
                        return
                step.result()
        finally:
            stopped.cancel()
            if step is not None and not step.done():  # run() itself was cancelled
                step.cancel()

    # --- one batch ---------------------------------------------------------------------

    async def step(self) -> int:
        s = self.settings
        if self._poller is not None and self._poller.done() and not self._poller.cancelled():
            # It never ends by itself. Gone, nothing would be acknowledged any more, and once this worker held
            # `max_inflight_messages` the broker would deliver it nothing more, silently: fail the worker instead.
            raise self._poller.exception() or RuntimeError("the poller of landed offsets ended")
        if len(self.source.inbox) < s.ingest_batch_size:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), s.ingest_flush_ms / 1000)
            except TimeoutError:
                pass
        messages = self.source.drain(s.ingest_batch_size * 4)
        if messages:
            await self.process(messages)
        await self.resend_stale()
        await self._flush_stats()
        await self._maybe_reload()
        return len(messages)

    async def process(self, messages: list[Message]) -> None:
        """Send the messages' records; PUBACK them once Kafka acknowledged every one (`KafkaSender.deliver`),
        or, acknowledging after landing, leave them waiting for landing (`ack_landed`)."""
        outgoing = self.preparer.prepare_all(messages)
        if self.preparer.held:  # a partner applied since we last read the catalog: read it now
            held, self.preparer.held = self.preparer.held, []
            await self._maybe_reload(soon=True)
            outgoing += self.preparer.prepare_all(held, hold_unknown_partners=False)
        counts, self.stats.counters = self.stats.counters, Counter()  # messages that sent nothing
        ingest_metrics.count_batch(len(messages), outgoing, counts, self._feed_of)
        if self.mode == "kafka":
            with ingest_metrics.KafkaTimer(len(outgoing)):
                await self.sender.deliver(outgoing, record=True, counts=counts)
            self._ack(messages)
            return
        with ingest_metrics.KafkaTimer(len(outgoing)):
            released = await self.sender.deliver(outgoing, record=False)
        self.waiting.add(Waiting.of(messages, outgoing, self.sender.landed_topics, released, counts))

    def _ack(self, messages: list[Message]) -> None:
        self.source.ack(messages)
        ingest_metrics.ACKNOWLEDGED.inc(len(messages))
        self.latency.record((m.received_ms for m in messages), time.time() * 1000)

    async def _poll_landed(self) -> None:
        """Beside the step loop, every `ingest_landed_poll_ms` while batches wait: PUBACK what landing stored.

        On a connection of its own, so an acknowledgement never waits for the next batch's send.
        """
        every = self.settings.ingest_landed_poll_ms / 1000
        while True:
            await asyncio.sleep(every)
            if not self.waiting.pending:
                continue
            try:
                await self.ack_landed()
            except ServerUnavailable as exc:
                self.outages.failed("see what landing stored (the PUBACKs wait)", exc, "PostgreSQL")
                continue
            self.outages.back("PostgreSQL")

    async def ack_landed(self) -> None:
        """PUBACK the waiting batches landing has stored, oldest first; hand those whose log was lost to `step`."""
        waiting = self.waiting
        if waiting.drop_older(self.source.generation):
            log.info("reconnected to the MQTT broker: batches of the earlier connection are delivered again")
        state = landed(await self.landed_db.run(POLL_SQL, waiting.topics()))
        ready, stale = waiting.check(state)
        counts = sum((w.refused for w in list(waiting.pending)[:ready]), Counter[tuple[str, str, str]]())
        if counts:
            await self.landed_db.run(COUNT_SQL, *counter_args(counts))
        for w in waiting.pop(ready):
            self._ack(w.messages)
        fresh = [w for w in stale if not w.resending]
        for w in fresh:
            w.resending = True
        self._stale += fresh
        if fresh:
            self._wake.set()

    async def resend_stale(self) -> None:
        """Send again, in one delivery, the records of batches whose log was lost before they landed."""
        stale, self._stale = self._stale, []
        if not stale:
            return
        records = [o for w in stale for o in w.records]
        log.warning(
            "%d records of %d messages were not landed when the Kafka broker's log was lost or set back: "
            "sending them again", len(records), sum(len(w.messages) for w in stale),
        )  # fmt: skip
        mark_resent(records)  # the first copy may have landed before the log was lost
        self.sender.repartition(records)
        released = await self.sender.deliver(records, record=False)
        for w in stale:
            w.rebase(released)
            w.resending = False

    async def _maybe_reload(self, soon: bool = False) -> None:
        """Pick up partners, feeds and schema versions applied while we run, every `catalog_reload_s`.

        With `soon` (a message of a partner we do not know yet) at most `RELOAD_SOON_S` after the last
        look, so a partner's first messages land instead of being refused as unknown; a new schema
        version is used for the next message.
        """
        now = time.monotonic()
        wait = RELOAD_SOON_S if soon else self.settings.catalog_reload_s
        if self.drain_only or now - self._last_reload < wait:
            return
        self._last_reload = now
        try:
            db = await self._database()
            feeds = await load_feeds(db)
        except Exception as exc:  # the database may be restarting: try again next time
            self.outages.failed("reload the catalog (tried again every few seconds)", exc, "PostgreSQL")
            return
        self.outages.back("PostgreSQL")
        if _signature(feeds) == _signature(self.feeds):
            return
        s = self.settings
        self.feeds = feeds
        self._feed_of = _feed_of(feeds)
        await self.sender.use_topics(_topic_specs(s, feeds))
        self.preparer.router = Router(build_routes(feeds, s))
        log.info("catalog reloaded: %d feeds", len(feeds))

    # --- the catalog database ----------------------------------------------------------

    async def _database(self) -> asyncpg.Connection:
        """The worker's catalog connection, opened again if the database restarted since its last use."""
        if self.db.is_closed():
            self.db = await connect(self.endpoints.database_url)
        return self.db

    async def _record_session(self, state: str, detail: str = "") -> None:
        """Record this worker's broker session state; a second try gets over a restart of the database."""
        for attempt in (1, 2):
            try:
                await catalog.set_resource(await self._database(), "mqtt-session", self.client_id, state, detail)
                return
            except DATABASE_ERRORS as exc:
                if attempt == 2:
                    raise
                log.warning("cannot record session state %r yet (%r): trying once more", state, exc)
                self.db.terminate()  # opened again by `_database`

    async def _flush_stats(self, force: bool = False) -> None:
        """Every two seconds: devices seen (last seen), PUBACK latencies, and landed ranges of acknowledged records.

        The counters of `hub stats` are not here: they are written with each acknowledgement.
        """
        now = time.monotonic()
        if not force and now - self._last_flush < 2.0:
            return
        self._last_flush = now
        devices, self.stats.devices = self.stats.devices, set()
        try:
            db = await self._database()
            async with db.transaction():
                await db.executemany(
                    """INSERT INTO hub.devices (partner_id, feed, device_id) VALUES ($1, $2, $3)
                       ON CONFLICT (partner_id, feed, device_id) DO UPDATE SET last_seen = now()""",
                    sorted(devices),
                )
                if self.latency.buckets:
                    await catalog.set_resource(db, ack_latency.KIND, self.client_id, self.mode, self.latency.as_json())
                if self.mode == "kafka" and (force or now - self._last_prune > 10.0):
                    self._last_prune = now
                    await db.execute(PRUNE_SQL)
        except Exception as exc:  # best effort: keep them for the next flush
            self.outages.failed("record devices and latencies (kept for the next try)", exc, "PostgreSQL")
            self.stats.devices |= devices
