"""Where a share worker writes: share topics in Kafka (record batches per partition) and share topics over MQTT.

Both collect what one batch of feed records produced and `flush` waits until every record is
acknowledged (Kafka's acks, MQTT's PUBACKs); only then does the worker store its positions, so a
crash repeats records (same keys) and never skips one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import ssl
import threading
from collections import defaultdict
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.errors import ServerUnavailable
from hub.kafka import TopicSpec, client_options
from hub.settings import HubSettings, MqttAddress

log = logging.getLogger("hub.share")


@functools.lru_cache(maxsize=200_000)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key) & 0x7FFFFFFF)


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (as ingest uses for feed topics)."""
    return _key_hash(key) % partitions


def share_topic_spec(settings: HubSettings, topic: str) -> TopicSpec:
    return TopicSpec(
        topic,
        settings.kafka_partitions,
        settings.kafka_replication_factor,
        {"retention.ms": str(settings.kafka_retention_ms)},
    )


Headers = list[tuple[str, bytes]]


class KafkaOut:
    """One producer; records gathered per (topic, partition), sent as batches by `flush`."""

    def __init__(self, settings: HubSettings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.partitions: dict[str, int] = {}
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

    def add(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        partition = partition_for(key, self.partitions[topic])
        self._pending[topic, partition].append((key, value, headers or []))

    def drop(self) -> None:
        self._pending.clear()

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
    """One MQTT v5 connection publishing at QoS 1; `flush` waits for every PUBACK of what was published."""

    def __init__(self, address: MqttAddress, client_id: str, tls_ca: str | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self._cond = threading.Condition()
        self._unacked: set[int] = set()
        self._early: set[int] = set()
        self._refused: list[str] = []
        self._connected = threading.Event()
        self._error: str | None = None
        self.published = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect

    @property
    def where(self) -> str:
        return f"{self.address.host}:{self.address.port}"

    def _on_connect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            self._error = f"the broker refused the share worker's login ({reason})"
        self._connected.set()

    def _on_publish(self, _c: object, _u: object, mid: int, reason: Any, _p: object) -> None:
        with self._cond:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:  # acknowledged before publish() returned and noted it
                self._early.add(mid)
            if getattr(reason, "is_failure", False):
                self._refused.append(str(reason))
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
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ServerUnavailable("MQTT broker", self.where, f"cannot publish ({mqtt.error_string(info.rc)})")
        with self._cond:
            if info.mid in self._early:
                self._early.discard(info.mid)
            else:
                self._unacked.add(info.mid)
        self.published += 1

    def _wait(self, timeout_s: float) -> None:
        with self._cond:
            done = self._cond.wait_for(lambda: not self._unacked or self._error is not None, timeout_s)
            unacked, self._unacked = len(self._unacked), set()
            refused, self._refused = self._refused, []
            error = self._error
        if error is not None:
            raise ServerUnavailable("MQTT broker", self.where, error)
        if not done:
            raise ServerUnavailable("MQTT broker", self.where, f"{unacked} PUBACKs missing after {timeout_s:.0f} s")
        if refused:
            raise ServerUnavailable("MQTT broker", self.where, f"{len(refused)} publishes refused ({refused[0]})")

    async def flush(self, timeout_s: float = 30.0) -> None:
        if self._unacked or self._refused or self._error:
            await asyncio.to_thread(self._wait, timeout_s)


def share_client_id(host: str) -> str:
    """A share worker's MQTT client id (and login): unique per process start."""
    return f"hub-share-{host}-{secrets.token_hex(4)}"
