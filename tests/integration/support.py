"""Helpers for integration tests: workers run in-process against the real test stack."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.catalog import tokens
from hub.catalog.store import ensure_catalog
from hub.control import credentials as partner_credentials
from hub.control import mqtt_logins
from hub.control.apply import apply
from hub.ingest.worker import IngestWorker
from hub.landing.worker import LandingWorker
from hub.mqtt_auth.accounts import ROLE_INGEST, SHARE_GROUP, generate_secret
from hub.mqtt_auth.dynsec import DynsecBroker, provision_login
from hub.settings import HubSettings
from hub.share.worker import ShareWorker
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.local import LocalStack, private_settings

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def private_stack(prefix: str) -> Iterator[HubSettings]:
    """A whole local stack on free ports in a state dir of its own; stopped and removed afterwards, whatever happens.

    Not under pytest's 0700 base directory: PostgreSQL runs as `postgres` when we are root.
    """
    settings = private_settings(prefix)
    stack = LocalStack(settings)
    try:
        unhealthy = [s for s in stack.up() if not s.healthy]
        if unhealthy:
            pytest.fail(f"test stack did not come up: {unhealthy}")
        yield settings
    finally:
        stack.down()  # whatever did start must not outlive the tests
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def apply_examples(settings: HubSettings) -> HubSettings:
    """The example partners of connectors/ applied, their credentials saved where `Device` looks for them."""
    result = asyncio.run(apply(settings, REPO / "connectors", broker=LocalBrokerAuth(settings)))
    partner_credentials.save_all(settings, partner_credentials.default_dir(settings), result.credentials)
    return settings


def unique(prefix: str = "dev") -> str:
    """A device id no other test uses, so tests sharing the stack never see each other's rows."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def credentials(settings: HubSettings, partner: str) -> dict[str, Any]:
    return partner_credentials.load(partner_credentials.default_dir(settings), partner)


T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from sync code, also when called inside a running event loop (a test)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def api_token(settings: HubSettings, org: str) -> str:
    """A new API token of `org` (`hub tokens create`), for the HTTP API's routes that need one."""

    async def make() -> str:
        conn = await asyncpg.connect(settings.endpoints().database_url)
        try:
            await ensure_catalog(conn)
            return (await tokens.create(conn, org, "tests", "test-suite"))[1]
        finally:
            await conn.close()

    return run_sync(make())


def device_login(settings: HubSettings, partner: str, name: str | None = None) -> tuple[str, str]:
    """A new login for one device of `partner` (`hub devices add`): (user name = client id, password)."""
    [(username, password)] = run_sync(mqtt_logins.add_devices(settings, partner, [name or unique("d")])).items()
    return username, password


def hub_login(settings: HubSettings, role: str = ROLE_INGEST) -> tuple[str, str]:
    """A login of the hub's own (as an ingest worker has: it may read partners' namespaces in the hub's group)."""
    username, password = unique("hub-test"), generate_secret()
    broker = DynsecBroker.from_settings(settings)
    run_sync(provision_login(broker, username, role, password))
    return username, password


def hub_listener(settings: HubSettings, topic_filter: str) -> Subscriber:
    """Reads `topic_filter` in the hub's own shared group, as the hub does (no ingest worker may run meanwhile)."""
    username, password = hub_login(settings)
    return Subscriber(settings, username, password, f"$share/{SHARE_GROUP}/{topic_filter}")


W = TypeVar("W", IngestWorker, LandingWorker, ShareWorker)


@asynccontextmanager
async def running(worker: W) -> AsyncIterator[W]:
    """Start a worker (an async context manager with `run(stop)`) in a background task; stop it cleanly on exit."""
    stop = asyncio.Event()
    async with worker:
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await task


def running_ingest(settings: HubSettings, index: int = 0) -> AbstractAsyncContextManager[IngestWorker]:
    """An ingest worker; leaves its shared group cleanly on exit."""
    return running(IngestWorker(settings, settings.endpoints(), index))


def running_land(settings: HubSettings, index: int = 0) -> AbstractAsyncContextManager[LandingWorker]:
    """Landing worker `index` (its client id, as `hub run land` numbers them) with these settings (`land_*`)."""
    return running(LandingWorker(settings, settings.endpoints(), index=index))


class Device:
    """A partner's device with a login of its own (`hub devices add`, removed again on `close`): publishes
    QoS 1 and records each PUBACK's reason."""

    def __init__(
        self,
        settings: HubSettings,
        partner: str,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        password: str | None = None,
    ) -> None:
        self.settings, self.partner = settings, partner
        self.username, own_password = device_login(settings, partner)
        address = settings.endpoints().mqtt()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.username, protocol=protocol)
        self.client.username_pw_set(self.username, password or own_password)
        if address.tls:
            self.client.tls_set(ca_certs=str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None)
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
        await eventually(lambda: len(self.acks) >= n, timeout_s, 0.02)
        return dict(self.acks)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        device = self.username.split(".", 1)[1]
        run_sync(mqtt_logins.remove_devices(self.settings, self.partner, [device]))


class Subscriber:
    """Reads a topic filter as some MQTT login (e.g. a partner reading its error reports), with the client id
    bound to it (its user name)."""

    def __init__(self, settings: HubSettings, username: str, password: str, topic: str) -> None:
        address = settings.endpoints().mqtt()
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[str] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv5)
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
        await eventually(lambda: len(self.messages) >= n, timeout_s, 0.02)
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


# --- added for the ingest tests --------------------------------------------------------


class TopicsSubscriber:
    """Subscribes to several topic filters in one SUBSCRIBE as some MQTT user; `granted` has one reason per filter.

    Messages arrive on one connection in the order the broker routed them, so a message on
    an allowed filter that the hub published after others is a barrier for those others.
    """

    def __init__(
        self,
        settings: HubSettings,
        username: str,
        password: str,
        topics: list[str],
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        address = settings.endpoints().mqtt()
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[str] = []
        self.granted_failures: list[bool] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=protocol)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_a: c.subscribe([(t, 1) for t in topics])

        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
            self.granted = [str(r) for r in reasons]
            self.granted_failures = [bool(r.is_failure) for r in reasons]
            self._ready.set()

        self.client.on_subscribe = on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("no SUBACK within 10 s")

    def on(self, prefix: str) -> list[tuple[str, bytes]]:
        return [(t, p) for t, p in list(self.messages) if t.startswith(prefix)]

    async def wait_until(self, done: Any, timeout_s: float = 15.0) -> bool:
        return await eventually(lambda: done(list(self.messages)), timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def eventually(condition: Any, timeout_s: float = 15.0, interval_s: float = 0.05) -> bool:
    """Poll `condition()` (sync or async) until it is true or the deadline passes; returns the last result."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result or asyncio.get_running_loop().time() >= deadline:
            return bool(result)
        await asyncio.sleep(interval_s)


async def read_keys(bootstrap: str, topic: str, keys: set[bytes], *, timeout_s: float = 30.0) -> dict[bytes, list[Any]]:
    """Read a Kafka topic from the beginning until every key in `keys` was seen (or time runs out).

    Returns the records of those keys, grouped by key (several per key when delivered more than once).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[bytes, list[Any]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        partitions: set[int] = set()
        while not partitions and loop.time() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(found) < len(keys) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for r in records:
                    if r.key in keys:
                        found.setdefault(r.key, []).append(r)
    finally:
        await consumer.stop()
    return found


# --- added for the landing tests -------------------------------------------------------

import time  # noqa: E402

from aiokafka import AIOKafkaProducer  # noqa: E402

from hub.catalog.runtime import FeedRuntime, load_feeds  # noqa: E402
from hub.ingest.worker import partition_for  # noqa: E402
from hub.landing.broker_memory import log_ends as landing_log_ends  # noqa: E402
from hub.schema.wire import WireEncoder  # noqa: E402


def own_group(settings: HubSettings) -> HubSettings:
    """The same settings with a landing consumer group no other test uses.

    Landing offsets live in the database, not in the group, so a fresh group resumes exactly
    where the table is, without waiting for a member left behind by another test to expire.
    """
    return settings.replace(land_group=unique("land"))


# The landing tests' name for the same helper.
running_landing = running_land


async def assigned_topic(worker: LandingWorker, topic: str, timeout_s: float = 30.0) -> bool:
    """Wait until the worker owns partitions of `topic` and is positioned at their stored offsets."""
    return await eventually(
        lambda: any(tp.topic == topic for tp in worker.assigned) and not worker.positions.pending, timeout_s
    )


async def feed_runtime(settings: HubSettings, partner: str, feed: str) -> FeedRuntime:
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        feeds = await load_feeds(conn)
    finally:
        await conn.close()
    return next(f for f in feeds if f.key == (partner, feed))


class FeedWriter:
    """Writes Confluent wire-format records straight to a feed topic, as ingest would (for landing tests).

    Records go out keyed by device id, to the partition ingest would pick, one batch per
    partition, each with the `received_ms` header; `partition` puts a whole send on one partition.
    """

    def __init__(self, settings: HubSettings, feed: FeedRuntime) -> None:
        self.settings = settings
        self.feed = feed
        self.topic = feed.row.kafka_topic
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.endpoints().kafka_bootstrap, acks="all")

    async def __aenter__(self) -> FeedWriter:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(
        self,
        records: list[dict[str, Any]],
        *,
        schema: tuple[int, dict[str, Any]] | None = None,
        partition: int | None = None,
    ) -> None:
        schema_id, parsed = schema or (self.feed.schema_id, self.feed.schema.parsed)
        encoder = WireEncoder(schema_id, parsed)
        await self.send_raw([(str(r["device_id"]).encode(), encoder.encode(r)) for r in records], partition)

    async def send_raw(self, items: list[tuple[bytes, bytes]], partition: int | None = None) -> None:
        partitions = len(await self.producer.partitions_for(self.topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in items:
            p = partition if partition is not None else partition_for(key, partitions)
            by_partition.setdefault(p, []).append((key, value))
        received = str(int(time.time() * 1000)).encode()
        futures = []
        for p, batch_items in by_partition.items():
            batch = self.producer.create_batch()
            for key, value in batch_items:
                if batch.append(key=key, value=value, timestamp=None, headers=[("received_ms", received)]) is None:
                    futures.append(await self.producer.send_batch(batch, self.topic, partition=p))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=[("received_ms", received)])
            futures.append(await self.producer.send_batch(batch, self.topic, partition=p))
        await asyncio.gather(*futures)


def air_quality_records(device: str, n: int, start_ms: int | None = None) -> list[dict[str, Any]]:
    """`n` valid uni_air_lab.air_quality records of one device, one second apart (pm25 = index)."""
    start = start_ms if start_ms is not None else int(time.time() * 1000) - 3_600_000
    return [
        {
            "device_id": device,
            "time": start + i * 1000,
            "pm25": float(i),
            "pm10": 2.0 * i,
            "no2": None,
            "temperature_c": 20.0,
            "humidity_pct": 50.0,
            "battery_v": None,
        }
        for i in range(n)
    ]


async def query(settings: HubSettings, sql: str, *args: Any) -> Any:
    """One value from the database."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def rows_of(settings: HubSettings, table: str, devices: list[str]) -> list[Any]:
    """Every row of `table` (schema-qualified, trusted) for these devices, ordered by device and time."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        return list(
            await conn.fetch(
                f"SELECT * FROM {table} WHERE device_id = ANY($1::text[]) ORDER BY device_id, time", devices
            )
        )
    finally:
        await conn.close()


async def until_rows(settings: HubSettings, table: str, devices: list[str], want: int, timeout_s: float = 30.0) -> int:
    """Wait until `table` holds `want` rows for these devices; returns the count seen last."""
    seen = 0

    async def enough() -> bool:
        nonlocal seen
        seen = int(await query(settings, f"SELECT count(*) FROM {table} WHERE device_id = ANY($1::text[])", devices))
        return seen >= want

    await eventually(enough, timeout_s, interval_s=0.1)
    return seen


async def offsets_match_log_ends(settings: HubSettings, topic: str) -> bool:
    """Every partition's stored offset is its log end: nothing left to land, nothing skipped."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        rows = await conn.fetch("SELECT kafka_partition, next_offset FROM hub.land_offsets WHERE topic = $1", topic)
    finally:
        await conn.close()
    stored = {r["kafka_partition"]: int(r["next_offset"]) for r in rows}
    ends = await landing_log_ends(settings, settings.endpoints().kafka_bootstrap, topic, stored)
    return ends is not None and all(stored.get(p, 0) == e for p, e in ends.items())
