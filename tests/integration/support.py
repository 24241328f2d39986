"""Helpers for integration tests: workers run in-process against the real test stack."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.ingest.worker import IngestWorker
from hub.landing.worker import LandingWorker
from hub.settings import HubSettings

REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str = "dev") -> str:
    """A device id no other test uses, so tests sharing the stack never see each other's rows."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def credentials(settings: HubSettings, partner: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((settings.state_dir / "credentials" / f"{partner}.json").read_text())
    return data


@asynccontextmanager
async def running_ingest(settings: HubSettings, index: int = 0) -> AsyncIterator[IngestWorker]:
    """An ingest worker in a background task; leaves its shared group cleanly on exit."""
    stop = asyncio.Event()
    async with IngestWorker(settings, settings.endpoints(), index) as worker:
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await task


@asynccontextmanager
async def running_land(settings: HubSettings) -> AsyncIterator[LandingWorker]:
    stop = asyncio.Event()
    async with LandingWorker(settings, settings.endpoints()) as worker:
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await task


class Device:
    """A partner's device: publishes QoS 1 with the partner's credentials and records each PUBACK's reason."""

    def __init__(
        self,
        settings: HubSettings,
        partner: str,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        password: str | None = None,
    ) -> None:
        creds = credentials(settings, partner)
        address = settings.endpoints().mqtt()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("test"), protocol=protocol)
        self.client.username_pw_set(creds["username"], password or creds["password"])
        self.acks: dict[int, str] = {}
        self.connect_reason: str | None = None
        self._connected = threading.Event()
        self._lock = threading.Lock()

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.connect_reason = str(reason)
            self._connected.set()

        def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
            with self._lock:
                self.acks[mid] = str(reason)

        self.client.on_connect = on_connect
        self.client.on_publish = on_publish
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()
        self._connected.wait(10)

    def publish(self, topic: str, payload: bytes | str) -> int:
        info = self.client.publish(topic, payload, qos=1)
        return info.mid

    async def wait_acks(self, n: int, timeout_s: float = 15.0) -> dict[int, str]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.acks) < n and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return dict(self.acks)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """Reads a topic filter as some MQTT user (e.g. a partner reading its error reports)."""

    def __init__(self, settings: HubSettings, username: str, password: str, topic: str) -> None:
        address = settings.endpoints().mqtt()
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[str] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=unique("sub"), protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)

        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
            self.granted = [str(r) for r in reasons]
            self._ready.set()

        self.client.on_subscribe = on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()
        self._ready.wait(10)

    async def wait_for(self, n: int, timeout_s: float = 15.0) -> list[tuple[str, bytes]]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.messages) < n and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def read_topic(
    settings: HubSettings, topic: str, *, match: Any = None, n: int = 1, timeout_s: float = 20.0
) -> list[Any]:
    """Read a Kafka topic from the beginning until `n` records satisfy `match` (or time runs out)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.endpoints().kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[Any] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # the topic may be moments old
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < n and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found += [r for r in records if match is None or match(r)]
    finally:
        await consumer.stop()
    return found


def header(record: Any, name: str) -> bytes | None:
    for k, v in record.headers:
        if k == name:
            return bytes(v)
    return None
