"""Where a share worker writes: share topics in Kafka (record batches per partition) and share topics over MQTT.

Both collect what one batch of feed records produced and `flush` waits until every record is
acknowledged (Kafka's acks, MQTT's PUBACKs); only then does the worker store its positions, so a
crash repeats records (same keys) and never skips one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub import dead_letters
from hub.agreement.streams import Stream
from hub.errors import ServerUnavailable
from hub.kafka import TopicSpec, client_options
from hub.settings import HubSettings, MqttAddress
from hub.share.mqtt_publisher import Ack, PublisherClient

log = logging.getLogger("hub.share")


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (as ingest uses for feed topics)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def share_topic_spec(settings: HubSettings, topic: str) -> TopicSpec:
    return TopicSpec(
        topic,
        settings.kafka_partitions,
        settings.kafka_replication_factor,
        {"retention.ms": str(settings.kafka_retention_ms)},
    )


Headers = list[tuple[str, bytes]]
NO_HEADERS: Headers = []  # shared by every record without headers (the producer only reads them)
CACHED_KEYS = 200_000  # partitions remembered per topic, then forgotten


def dead_letter_headers(x: Stream, message: str) -> Headers:
    """A record stream `x` cannot show: the dead-letter topic's headers, naming the agreement."""
    return dead_letters.refused(
        "does_not_project",
        f"agreement {x.agreement.id} ({x.id}): {message}",
        stage="share",
        keep=[
            (dead_letters.PARTNER, x.clause.provider.encode()),
            (dead_letters.FEED, x.clause.feed.encode()),
            (dead_letters.AGREEMENT, x.agreement.id.encode()),
        ],
    )


class KafkaOut:
    """One producer; records gathered per (topic, partition), sent as batches by `flush`."""

    def __init__(self, settings: HubSettings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.partitions: dict[str, int] = {}
        self._partition_of: dict[str, dict[bytes, int]] = {}  # per topic, by key (the same devices again and again)
        self._pending: dict[tuple[str, int], list[tuple[bytes, bytes, Headers]]] = defaultdict(list)
        self.sent = 0

    async def __aenter__(self) -> KafkaOut:
        s = self.settings
        self.producer = AIOKafkaProducer(
            **client_options(s, self.bootstrap),
            acks="all",
            linger_ms=s.kafka_linger_ms,
            max_batch_size=s.kafka_max_batch_bytes,
            request_timeout_ms=15_000,
        )
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def know(self, topic: str) -> None:
        """Learn a topic's partition count (it must exist)."""
        self.partitions[topic] = len(await self.producer.partitions_for(topic))
        self._partition_of[topic] = {}

    def add(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        known = self._partition_of[topic]
        partition = known.get(key)
        if partition is None:
            if len(known) >= CACHED_KEYS:
                known.clear()
            partition = known[key] = partition_for(key, self.partitions[topic])
        self._pending[topic, partition].append((key, value, headers or NO_HEADERS))

    def drop(self) -> None:
        self._pending.clear()

    def pending_topics(self) -> list[str]:
        return sorted({topic for topic, _partition in self._pending})

    async def flush(self) -> int:
        """Send everything added; returns once the broker acknowledged all of it (raises if it did not)."""
        pending, self._pending = self._pending, defaultdict(list)
        futures = []
        n = 0
        for (topic, partition), items in pending.items():
            batch = self.producer.create_batch()
            for key, value, headers in items:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
            n += len(items)
        if futures:
            await asyncio.gather(*futures)
        self.sent += n
        return n


class MqttOut:
    """One MQTT v5 connection at QoS 1: `publish` collects, `flush` sends the batch and waits for every PUBACK.

    At most `WINDOW` publishes (or the broker's Receive Maximum) are unacknowledged at a time. A lost
    connection or a refused publish fails the flush (the worker then reads the batch again from its
    stored positions); the next flush goes on over paho's new connection.
    """

    WINDOW = 1000

    def __init__(self, address: MqttAddress, client_id: str, tls_ca: str | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self._batch: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._unacked: set[int] = set()
        self._early: set[int] = set()  # acknowledged before publish_batch returned their ids
        self._refused: list[int] = []
        self._connected = threading.Event()
        self._error: str | None = None
        self._connects = 0  # paho drops what was queued for a connection it replaces: a flush across one fails
        self._window = self.WINDOW
        self.published = 0
        self.client = PublisherClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            on_pubacks=self._on_pubacks,
        )
        self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.max_inflight_messages_set(self.WINDOW)  # paho's own publishes (without its internals)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    @property
    def where(self) -> str:
        return f"{self.address.host}:{self.address.port}"

    def _on_connect(self, _c: object, _u: object, _f: object, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._cond:
                self._error = f"the broker refused the share worker's login ({reason})"
                self._cond.notify_all()
        else:
            with self._cond:
                self._window = max(1, min(self.WINDOW, getattr(properties, "ReceiveMaximum", self.WINDOW)))
                self._connects += 1
                self._cond.notify_all()
        self._connected.set()

    def _on_pubacks(self, acks: list[Ack]) -> None:
        with self._cond:
            for mid, reason in acks:
                if mid in self._unacked:
                    self._unacked.discard(mid)
                else:  # acknowledged before publish_batch returned and noted it
                    self._early.add(mid)
                if reason >= 0x80:
                    self._refused.append(reason)
            self._cond.notify_all()

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        with self._cond:
            self._error = self._error or f"disconnected ({reason})"
            self._cond.notify_all()

    def start(self) -> None:
        try:
            self.client.connect(self.address.host, self.address.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise ServerUnavailable("MQTT broker", self.where, str(exc)) from exc
        self.client.loop_start()
        if not self._connected.wait(15) or self._error:
            self.stop()
            raise ServerUnavailable("MQTT broker", self.where, self._error or "no CONNACK within 15 s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with the next `flush`."""
        self._batch.append((topic, payload))

    def drop(self) -> None:
        self._batch.clear()

    def _send(self, batch: list[tuple[str, bytes]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            connects = self._connects
            if batch and not self.client.is_connected():
                error, self._error = self._error, None
                raise ServerUnavailable("MQTT broker", self.where, error or "not connected (paho connects again)")
        try:
            for start in range(0, len(batch), self._window):
                chunk = batch[start : start + self._window]
                self._wait(functools.partial(self._room_for, len(chunk)), deadline, connects)
                try:
                    mids = self.client.publish_batch(chunk)
                except OSError as exc:
                    raise ServerUnavailable("MQTT broker", self.where, str(exc)) from exc
                with self._cond:
                    for mid in mids:
                        if mid in self._early:
                            self._early.discard(mid)
                        else:
                            self._unacked.add(mid)
                self.published += len(chunk)
            self._wait(lambda: not self._unacked, deadline, connects)
        finally:
            with self._cond:
                self._unacked.clear()
                self._early.clear()

    def _room_for(self, n: int) -> bool:
        return len(self._unacked) + n <= self._window

    def _wait(self, ready: Callable[[], bool], deadline: float, connects: int) -> None:
        """Until `ready()`; raises once the connection was lost or replaced, a publish refused, or time is up."""
        with self._cond:
            self._cond.wait_for(
                lambda: ready() or self._error is not None or bool(self._refused) or self._connects != connects,
                max(0.0, deadline - time.monotonic()),
            )
            done = ready()
            if not done and self._connects != connects:
                self._error = self._error or "connected again while publishing (what was queued is gone)"
            error, self._error = self._error, None
            refused, self._refused = self._refused, []
            unacked = len(self._unacked)
        if refused:  # the cause, when the broker also dropped the connection after refusing
            why = f"{len(refused)} publishes refused (reason code {refused[0]:#04x})"
            raise ServerUnavailable("MQTT broker", self.where, why + (f"; {error}" if error else ""))
        if error is not None:
            raise ServerUnavailable("MQTT broker", self.where, error)
        if not done:
            raise ServerUnavailable("MQTT broker", self.where, f"{unacked} PUBACKs missing after the flush's timeout")

    async def flush(self, timeout_s: float = 30.0) -> None:
        batch, self._batch = self._batch, []
        if batch or self._error:
            await asyncio.to_thread(self._send, batch, timeout_s)
