"""Ingest on real servers: partners' MQTT messages become Avro records in Kafka or dead letters, losing nothing.

Every test publishes with its own device ids (`unique`), so tests sharing the session's stack
never count each other's records. Workers run in-process (`running_ingest`) unless the test is
about a process being killed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import asyncpg
import fastavro
import orjson
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from paho.mqtt.enums import MQTTProtocolVersion

from hub.catalog.runtime import FeedRuntime, load_feeds, schema_by_id
from hub.control import credentials as partner_credentials
from hub.ingest.identity import worker_client_id
from hub.ingest.stale_sessions import drain as drain_stale_sessions
from hub.ingest.worker import IngestWorker
from hub.mqtt_socket import READ_SIZE
from hub.schema.wire import decode_wire
from hub.settings import HubSettings
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.process import free_port, wait_for_port
from hub.stack.servers import kafka_process, postgres_process, start_kafka, start_postgres, stop_postgres
from tests.integration.support import (
    Device,
    TopicsSubscriber,
    credentials,
    eventually,
    header,
    offsets_match_log_ends,
    own_group,
    read_keys,
    read_topic,
    running_ingest,
    running_land,
    unique,
    until_rows,
)

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
AIR, TRANSPORT, VOLT = "uni_air_lab", "city_transport", "voltcharge"
LONDON = ZoneInfo("Europe/London")


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(applied: HubSettings) -> HubSettings:
    """The session stack with ingest acknowledging once Kafka has the records: these tests run ingest alone
    (test_no_loss.py covers acknowledging after landing, the local stack's default)."""
    return applied.replace(ingest_ack="kafka")


@pytest.fixture
def hub_env(hub_env: dict[str, str]) -> dict[str, str]:
    return {**hub_env, "HUB_INGEST_ACK": "kafka"}


@pytest.fixture(scope="module")
async def feeds(applied: HubSettings) -> dict[tuple[str, str], FeedRuntime]:
    conn = await asyncpg.connect(applied.endpoints().database_url)
    try:
        return {f.key: f for f in await load_feeds(conn)}
    finally:
        await conn.close()


async def decode_records(settings: HubSettings, records: list[Any]) -> list[dict[str, Any]]:
    """Kafka values in the wire format, read back with the schema the catalog holds for their id."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    schemas: dict[int, Any] = {}
    out: list[dict[str, Any]] = []
    try:
        for r in records:
            schema_id, body = decode_wire(r.value)
            if schema_id not in schemas:
                found = await schema_by_id(conn, schema_id)
                assert found is not None, f"schema id {schema_id} is not in the catalog"
                schemas[schema_id] = found.parsed
            value = fastavro.schemaless_reader(io.BytesIO(body), schemas[schema_id], None)
            assert isinstance(value, dict)
            out.append(value)
    finally:
        await conn.close()
    return out


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def air_payload(t_ms: int | None = None, **extra: Any) -> bytes:
    body = {"t": t_ms if t_ms is not None else int(time.time() * 1000), "pm2_5": 12.5, "pm10": 20.0}
    body.update({"temp_f": 212.0, "rh": 40.0, **extra})
    return orjson.dumps(body)


def air_topic(device: str) -> str:
    return f"partners/{AIR}/stations/{device}/air"


async def session_state(settings: HubSettings, name: str) -> str | None:
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        state: str | None = await conn.fetchval(
            "SELECT state FROM hub.resources WHERE kind = 'mqtt-session' AND name = $1", name
        )
        return state
    finally:
        await conn.close()


async def publish_all(dev: Device, items: list[tuple[str, bytes]], *, per_second: float | None = None) -> None:
    """Publish QoS 1, optionally paced, and wait until the broker acknowledged every message."""
    start = time.monotonic()
    before = len(dev.acks)
    for i, (topic, payload) in enumerate(items):
        dev.publish(topic, payload)
        if per_second is not None and i % 20 == 19:
            ahead = start + (i + 1) / per_second - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    acks = await dev.wait_acks(before + len(items), timeout_s=30)
    assert len(acks) == before + len(items), f"the broker acknowledged {len(acks) - before} of {len(items)}"
    # MQTT v5 PUBACKs say "No matching subscribers" when nobody would receive a message.
    assert set(acks.values()) == {"Success"}, set(acks.values())


class Crash(Exception):
    """Raised inside a worker's context to leave it as a crash would: its broker session stays."""


# --- valid messages of every format ----------------------------------------------------


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311], ids=["v5", "v311"])
async def test_valid_messages_of_every_payload_format_reach_their_feed_topic_decodably(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime], protocol: MQTTProtocolVersion
) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    air_dev, noise_dev, traffic_dev, parking_dev, charger = (unique(p) for p in ("air", "noise", "tc", "park", "ch"))

    noise_schema = feeds[(AIR, "noise_levels")].schema.parsed
    noise_body = io.BytesIO()
    fastavro.schemaless_writer(
        noise_body,
        noise_schema,
        {"device_id": noise_dev, "time": ms(now), "laeq_db": 54.5, "lamax_db": 71.0, "interval_s": 60},
    )
    # What a counter in Riverton sends: London wall-clock time, no zone (in winter it equals UTC;
    # tests/unit/test_decode.py covers zones with other offsets).
    local = now.astimezone(LONDON).replace(tzinfo=None)
    plus_one = now.astimezone(timezone(timedelta(hours=1)))

    # (partner, mqtt topic, payload, feed, device id, expected fields)
    cases: list[tuple[str, str, bytes, str, str, dict[str, Any]]] = [
        (
            AIR,
            air_topic(air_dev),
            air_payload(ms(now), vbat=3.5),
            "air_quality",
            air_dev,
            {"pm25": 12.5, "pm10": 20.0, "no2": None, "humidity_pct": 40.0, "battery_v": 3.5},
        ),
        (
            AIR,
            f"partners/{AIR}/stations/{noise_dev}/noise",
            noise_body.getvalue(),
            "noise_levels",
            noise_dev,
            {"laeq_db": 54.5, "lamax_db": 71.0, "interval_s": 60},
        ),
        (
            TRANSPORT,
            f"partners/{TRANSPORT}/traffic/{traffic_dev}",
            orjson.dumps({"ts": local.isoformat(), "lane": 2, "count": 17, "hgv": 3, "speed_mph": 30}),
            "traffic_counts",
            traffic_dev,
            {"lane": 2, "vehicles": 17, "heavy_vehicles": 3, "interval_s": 60},
        ),
        (
            TRANSPORT,
            f"partners/{TRANSPORT}/parking/{parking_dev}",
            f"{now.isoformat().replace('+00:00', 'Z')},412,500,OPEN".encode(),
            "parking_occupancy",
            parking_dev,
            {"occupied": 412, "capacity": 500, "status": "OPEN"},
        ),
        (
            VOLT,
            f"partners/{VOLT}/chargers/status",
            orjson.dumps(
                {
                    "charger": charger,
                    "timestamp": plus_one.isoformat(),
                    "connector": 2,
                    "status": "CHARGING",
                    "kw": 7.4,
                    "session_kwh": 3.25,
                }
            ),
            "charger_status",
            charger,
            {"connector": 2, "status": "CHARGING", "power_kw": 7.4, "energy_kwh": 3.25},
        ),
    ]
    devices = {p: Device(applied, p, protocol=protocol) for p in (AIR, TRANSPORT, VOLT)}
    try:
        async with running_ingest(applied):
            for partner, topic, payload, *_ in cases:
                devices[partner].publish(topic, payload)
            for dev in devices.values():
                await dev.wait_acks(sum(1 for c in cases if devices[c[0]] is dev))
            for partner, topic, _payload, feed, device, expected in cases:
                runtime = feeds[(partner, feed)]
                found = await read_keys(applied.endpoints().kafka_bootstrap, runtime.row.kafka_topic, {device.encode()})
                assert device.encode() in found, f"{feed}: nothing in {runtime.row.kafka_topic} for {device}"
                [record] = found[device.encode()]
                assert record.key == device.encode()
                assert header(record, "partner") == partner.encode()
                assert header(record, "feed") == feed.encode()
                assert header(record, "device") == device.encode()
                assert header(record, "mqtt_topic") == topic.encode()
                received = int(header(record, "received_ms") or b"0")
                assert abs(received - time.time() * 1000) < 60_000
                assert decode_wire(record.value)[0] == runtime.schema_id
                [value] = await decode_records(applied, [record])
                assert value["device_id"] == device
                assert ms(value["time"]) == ms(now), f"{feed}: event time"
                for name, want in expected.items():
                    assert value[name] == pytest.approx(want), f"{feed}.{name}"
                if feed == "air_quality":
                    assert value["temperature_c"] == pytest.approx(100.0)  # 212 °F
                if feed == "traffic_counts":
                    assert value["avg_speed_kmh"] == pytest.approx(30 * 1.609344)  # mph -> km/h
    finally:
        for dev in devices.values():
            dev.close()


# --- invalid messages ------------------------------------------------------------------


async def test_each_kind_of_invalid_message_is_dead_lettered_with_its_reason_and_reported_to_its_partner_only(
    applied: HubSettings,
) -> None:
    ids = {k: unique(k.replace("_", "")) for k in ("decode", "type", "missing", "old", "large", "unknown")}
    old = int((time.time() - 30 * 86400) * 1000)
    cases: dict[str, tuple[str, bytes]] = {
        "not_decodable": (air_topic(ids["decode"]), b'{"t": 1, "pm2_5": '),
        "wrong_type": (air_topic(ids["type"]), air_payload(pm2_5="high")),
        "missing_field": (air_topic(ids["missing"]), orjson.dumps({"t": int(time.time() * 1000), "pm2_5": 1.0})),
        "time_out_of_range": (air_topic(ids["old"]), air_payload(old)),
        "too_large": (air_topic(ids["large"]), air_payload(note="x" * (applied.ingest_max_payload_bytes + 10))),
        "unknown_topic": (f"partners/{AIR}/stations/{ids['unknown']}/pollen", air_payload()),
    }
    air, transport = credentials(applied, AIR), credentials(applied, TRANSPORT)
    owner = TopicsSubscriber(applied, air["username"], air["password"], [f"{applied.mqtt_error_root}/{AIR}/#"])
    # Another partner asks for its own reports and for the university's: only its own may arrive.
    intruder = TopicsSubscriber(
        applied,
        transport["username"],
        transport["password"],
        [f"{applied.mqtt_error_root}/{TRANSPORT}/#", f"{applied.mqtt_error_root}/{AIR}/#"],
    )
    dev, barrier_dev = Device(applied, AIR), Device(applied, TRANSPORT)
    barrier_topic = f"partners/{TRANSPORT}/parking/{unique('barrier')}"
    try:
        async with running_ingest(applied):
            for topic, payload in cases.values():
                dev.publish(topic, payload)
            assert await owner.wait_until(lambda m: len(m) >= len(cases))
            barrier_dev.publish(barrier_topic, b"not,a,valid,line,at all")
            assert await intruder.wait_until(lambda m: any(json.loads(p)["topic"] == barrier_topic for _, p in m))
            dead = await read_keys(
                applied.endpoints().kafka_bootstrap,
                applied.kafka_dead_letter_topic,
                {topic.encode() for topic, _ in cases.values()},
            )
    finally:
        for c in (owner, intruder, dev, barrier_dev):
            c.close()

    reports = {json.loads(p)["topic"]: (t, json.loads(p)) for t, p in owner.messages}
    for reason, (topic, payload) in cases.items():
        [record] = dead[topic.encode()]
        assert header(record, "reason") == reason.encode()
        assert header(record, "partner") == AIR.encode()
        assert header(record, "mqtt_topic") == topic.encode()
        assert (header(record, "message") or b"") != b""
        assert record.value == payload, f"{reason}: the dead letter holds the raw payload"
        error_topic, report = reports[topic]
        assert report["reason"] == reason
        assert report["message"]
        feed = "_unknown" if reason == "unknown_topic" else "air_quality"
        assert report["feed"] == feed
        assert error_topic == f"{applied.mqtt_error_root}/{AIR}/{feed}"
    assert "time.max_age" in reports[cases["time_out_of_range"][0]][1]["message"]
    assert "pm25" in reports[cases["wrong_type"][0]][1]["message"]

    # The broker refuses the other partner's reports at SUBSCRIBE (reason 135), and nothing of them arrives.
    assert intruder.granted_failures == [False, True], intruder.granted
    assert intruder.messages, "the intruder's own report (the barrier) arrived"
    assert all(t.startswith(f"{applied.mqtt_error_root}/{TRANSPORT}/") for t, _ in intruder.messages)


# --- a killed worker ---------------------------------------------------------------


WorkerProcess = Callable[[], "subprocess.Popen[bytes]"]


@pytest.fixture
def worker_process(hub_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    """Starts `hub run ingest` as a process group (its log in tmp_path); whatever still runs at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / f"hub-run-ingest-{len(started)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "run", "ingest"],
                env=hub_env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGKILL reaches the worker it spawned too
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def stop_cleanly(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as a service manager stops it; the worker leaves its group and ends its broker session."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, 30)


async def session_since(settings: HubSettings, name: str, since: datetime) -> bool:
    """True once the worker owning this MQTT client id has subscribed after `since`."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        return bool(
            await conn.fetchval(
                """SELECT 1 FROM hub.resources
                   WHERE kind = 'mqtt-session' AND name = $1 AND state = 'active' AND updated_at > $2""",
                name,
                since,
            )
        )
    finally:
        await conn.close()


async def test_a_worker_killed_mid_stream_and_restarted_loses_no_message(
    applied: HubSettings, worker_process: WorkerProcess, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    kafka_topic = feeds[(AIR, "air_quality")].row.kafka_topic
    devices = [unique("kill") for _ in range(2000)]
    dev = Device(applied, AIR)
    try:
        since = datetime.now(UTC)
        worker = worker_process()
        assert await eventually(lambda: session_since(applied, worker_client_id(applied, 0), since), timeout_s=30)
        stream = asyncio.create_task(publish_all(dev, [(air_topic(d), air_payload()) for d in devices], per_second=400))
        # Killed while the stream goes on: some of it is in Kafka, some delivered but not acknowledged.
        assert await eventually(lambda: len(dev.acks) >= 800, timeout_s=30)
        os.killpg(worker.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.wait, 10)
        killed_at = len(dev.acks)
        since = datetime.now(UTC)
        restarted = worker_process()
        await stream
        assert await eventually(lambda: session_since(applied, worker_client_id(applied, 0), since), timeout_s=30)
        found = await read_keys(
            applied.endpoints().kafka_bootstrap, kafka_topic, {d.encode() for d in devices}, timeout_s=60
        )
        assert await stop_cleanly(restarted) == 0
    finally:
        dev.close()
    missing = [d for d in devices if d.encode() not in found]
    duplicates = sum(len(v) - 1 for v in found.values())
    print(f"killed at {killed_at} of {len(devices)} published: {len(missing)} missing, {duplicates} duplicates")
    assert not missing, f"{len(missing)} of {len(devices)} messages never reached Kafka, e.g. {missing[:3]}"
    assert await session_state(applied, worker_client_id(applied, 0)) == "ended"


def worker_children(supervisor_pid: int) -> list[psutil.Process]:
    """The worker processes `hub run` spawned (not multiprocessing's resource tracker)."""
    return [c for c in psutil.Process(supervisor_pid).children() if "resource_tracker" not in " ".join(c.cmdline())]


async def test_hub_run_ingest_starts_a_worker_that_died_again_and_it_resumes_its_session(
    applied: HubSettings, worker_process: WorkerProcess, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    kafka_topic = feeds[(AIR, "air_quality")].row.kafka_topic
    devices = [unique("revive") for _ in range(300)]
    dev = Device(applied, AIR)
    try:
        since = datetime.now(UTC)
        supervisor = worker_process()
        assert await eventually(lambda: session_since(applied, worker_client_id(applied, 0), since), timeout_s=30)
        [worker] = worker_children(supervisor.pid)
        worker.kill()  # the worker alone, as the OOM killer would
        await asyncio.to_thread(worker.wait, 10)
        await publish_all(dev, [(air_topic(d), air_payload()) for d in devices])
        found = await read_keys(
            applied.endpoints().kafka_bootstrap, kafka_topic, {d.encode() for d in devices}, timeout_s=30
        )
        assert [p.pid for p in worker_children(supervisor.pid)] != [worker.pid]
        assert await stop_cleanly(supervisor) == 0
    finally:
        dev.close()
    assert len(found) == len(devices)
    assert await session_state(applied, worker_client_id(applied, 0)) == "ended"


# --- workers sharing the subscription -------------------------------------------------


async def test_two_workers_share_the_stream_and_one_stopping_cleanly_leaves_everything_to_the_other(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    bootstrap, kafka_topic = applied.endpoints().kafka_bootstrap, feeds[(AIR, "air_quality")].row.kafka_topic
    shared, after = [unique("two") for _ in range(1000)], [unique("one") for _ in range(500)]
    dev = Device(applied, AIR)
    try:
        async with running_ingest(applied, 0) as first:
            async with running_ingest(applied, 1) as second:
                await publish_all(dev, [(air_topic(d), air_payload()) for d in shared], per_second=2000)
                found = await read_keys(bootstrap, kafka_topic, {d.encode() for d in shared})
                assert len(found) == len(shared)
                assert first.stats.accepted > 0 and second.stats.accepted > 0, "both workers took a share"
            # The second worker left its shared group and ended its session: nothing waits for it.
            assert await session_state(applied, worker_client_id(applied, 1)) == "ended"
            before = first.stats.accepted
            await publish_all(dev, [(air_topic(d), air_payload()) for d in after])
            found = await read_keys(bootstrap, kafka_topic, {d.encode() for d in after})
            assert first.stats.accepted - before == len(after)
    finally:
        dev.close()
    assert len(found) == len(after), f"{len(after) - len(found)} of {len(after)} went to the stopped worker"


async def test_draining_a_stale_session_while_devices_publish_loses_nothing_and_takes_it_out_of_the_shared_group(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    """Index 1 crashed and is no longer wanted (1 worker): what waits in its session is delivered, and it
    must not keep taking a share of what comes next."""
    bootstrap, kafka_topic = applied.endpoints().kafka_bootstrap, feeds[(AIR, "air_quality")].row.kafka_topic
    waiting, during, after = ([unique(p) for _ in range(400)] for p in ("stale", "during", "fresh"))
    with pytest.raises(Crash):
        async with IngestWorker(applied, applied.endpoints(), 1):
            raise Crash
    assert await session_state(applied, worker_client_id(applied, 1)) == "active"
    dev = Device(applied, AIR)
    try:
        async with running_ingest(applied, 0) as worker:
            await publish_all(dev, [(air_topic(d), air_payload()) for d in waiting])
            # The broker gave the stale session its share: that part cannot reach the live worker.
            assert worker.source.received < len(waiting)
            stream = asyncio.create_task(
                publish_all(dev, [(air_topic(d), air_payload()) for d in during], per_second=400)
            )
            assert await drain_stale_sessions(applied, mine=[0]) == [worker_client_id(applied, 1)]
            await stream
            assert await session_state(applied, worker_client_id(applied, 1)) == "ended"
            before = worker.stats.accepted
            await publish_all(dev, [(air_topic(d), air_payload()) for d in after])
            found = await read_keys(bootstrap, kafka_topic, {d.encode() for d in waiting + during + after})
            # Only the live worker is left in the group: it took every message published after the drain.
            assert await eventually(lambda: worker.stats.accepted - before >= len(after))
    finally:
        dev.close()
    missing = {
        name: sum(d.encode() not in found for d in ids)
        for name, ids in (("waiting", waiting), ("during the drain", during), ("after", after))
    }
    assert not any(missing.values()), f"missing: {missing}"


# --- the broker queues for a stopped worker ------------------------------------------


async def test_the_broker_keeps_every_message_queued_for_a_stopped_worker_beyond_mosquittos_default_limit(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    """Mosquitto's default max_queued_messages (1000) would silently drop the rest of these 5,000."""
    kafka_topic = feeds[(AIR, "air_quality")].row.kafka_topic
    devices = [unique("q") for _ in range(5000)]
    with pytest.raises(Crash):
        async with IngestWorker(applied, applied.endpoints(), 0):
            raise Crash  # the worker is gone; its persistent session stays subscribed in the broker
    dev = Device(applied, AIR, protocol=MQTTProtocolVersion.MQTTv311)
    try:
        await publish_all(dev, [(air_topic(d), air_payload()) for d in devices])
        async with running_ingest(applied) as worker:
            found = await read_keys(
                applied.endpoints().kafka_bootstrap, kafka_topic, {d.encode() for d in devices}, timeout_s=60
            )
            assert worker.source.received >= len(devices)
    finally:
        dev.close()
    assert len(found) == len(devices), f"{len(devices) - len(found)} of {len(devices)} queued messages were lost"


def burst_of_devices(settings: HubSettings, prefix: str, n: int) -> tuple[Device, list[str], list[tuple[str, bytes]]]:
    """A publisher of `AIR`, and one message each from `n` new devices."""
    devices = [unique(prefix) for _ in range(n)]
    publisher = Device(settings, AIR, protocol=MQTTProtocolVersion.MQTTv311)
    return publisher, devices, [(air_topic(d), air_payload()) for d in devices]


def one_read(messages: list[tuple[str, bytes]]) -> int:
    """At most how many of these messages one read of READ_SIZE bytes holds."""
    return READ_SIZE // min(len(topic) + len(payload) for topic, payload in messages)


def hold_the_event_loop_until_reading_paused(
    worker: IngestWorker, then_s: float = 0.5, timeout_s: float = 20
) -> tuple[int, int]:
    """Blocks the calling event loop, on purpose: a worker running on it processes nothing meanwhile, while its
    MQTT thread goes on reading. Holds `then_s` more once reading paused (time for reads past the bound, were
    there any). Returns (messages in its inbox, times it paused reading)."""
    deadline = time.monotonic() + timeout_s
    while worker.source.pauses == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(then_s)
    return len(worker.source.inbox), worker.source.pauses


async def test_a_worker_behind_its_broker_stops_reading_at_its_inbox_bound_and_still_gets_every_message(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    """The broker's in-flight window did not bound what a worker holds (75,000 messages under a burst in hub
    bench); the worker leaves what it cannot hold yet in the socket, one read of READ_SIZE bytes at most beyond."""
    settings = applied.replace(ingest_max_inbox=150, mqtt_keepalive_s=2)
    kafka_topic = feeds[(AIR, "air_quality")].row.kafka_topic
    dev, devices, messages = burst_of_devices(settings, "box", 3000)
    try:
        async with running_ingest(settings) as worker:
            for topic, payload in messages:
                dev.publish(topic, payload)
            # paused for three keepalives: the connection stays up (its PINGRESPs wait unread in the socket)
            held, paused = hold_the_event_loop_until_reading_paused(worker, then_s=3 * 2)
            connections = worker.source.generation
            found = await read_keys(
                settings.endpoints().kafka_bootstrap, kafka_topic, {d.encode() for d in devices}, timeout_s=60
            )
    finally:
        dev.close()
    assert paused >= 1 and held <= 150 + one_read(messages), (paused, held)
    assert connections == 1
    assert len(found) == len(devices), f"{len(devices) - len(found)} of {len(devices)} messages were lost"


async def test_acknowledging_after_landing_a_worker_stops_reading_at_its_in_flight_bound_while_nothing_lands(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    """Processed messages wait for landing unacknowledged; while landing is away they stop at the bound instead of
    filling the worker's memory, and all of them land once it is back."""
    # reading pauses at 100 in the inbox or 100 + 300 delivered and unacknowledged in all
    settings = applied.replace(ingest_ack="landed", ingest_max_in_flight=300, ingest_max_inbox=100)
    row = feeds[(AIR, "air_quality")].row
    dev, devices, messages = burst_of_devices(settings, "wait", 2000)
    try:
        async with running_ingest(settings) as worker:
            for topic, payload in messages:
                dev.publish(topic, payload)
            assert await eventually(lambda: worker.source.pauses >= 1, 30)
            await asyncio.sleep(0.5)  # time for reads past the bound, were there any
            held = worker.source.outstanding
            async with running_land(own_group(settings)):
                landed = await until_rows(settings, f"{row.table_schema}.{row.table_name}", devices, 2000, 90)
    finally:
        dev.close()
    assert held <= 100 + 300 + one_read(messages), held
    assert landed == len(devices), f"{len(devices) - landed} of {len(devices)} messages did not land"


# --- hub stats -------------------------------------------------------------------------


def hub_stats(hub_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "stats", *args],
        env={**hub_env, "COLUMNS": "200"},  # a table that fits on one line per feed
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def counts(hub_env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    result = hub_stats(hub_env, "--json")
    assert result.returncode == 0, result.stderr
    return {(r["partner"], r["feed"]): r for r in json.loads(result.stdout)}


async def test_hub_stats_shows_accepted_and_refused_messages_per_partner_and_feed_with_the_commonest_reasons(
    applied: HubSettings, hub_env: dict[str, str]
) -> None:
    dev = Device(applied, AIR)
    good = [(air_topic(unique("st")), air_payload()) for _ in range(5)]
    bad = [(air_topic(unique("st")), b"{") for _ in range(3)] + [(air_topic(unique("st")), air_payload(pm2_5="x"))]
    unknown = [(f"partners/{AIR}/elsewhere/{unique('st')}", b"?")]
    topic = f"hub.{AIR}.air_quality"
    try:
        # Accepted means landed as a row: the counts come from what is durable, not from the workers.
        async with running_land(own_group(applied)), running_ingest(applied):
            # What the tests before left in Kafka lands first.
            assert await eventually(lambda: offsets_match_log_ends(applied, topic), timeout_s=60, interval_s=0.5)
            before = counts(hub_env)
            was = before.get((AIR, "air_quality"), {"accepted": 0, "refused": 0, "acknowledged": 0, "reasons": []})

            def counted() -> bool:
                now = counts(hub_env)[(AIR, "air_quality")]["acknowledged"]
                return now - was["acknowledged"] >= len(good) + len(bad)

            await publish_all(dev, good + bad + unknown)
            assert await eventually(counted, timeout_s=30, interval_s=0.5)
    finally:
        dev.close()
    after = counts(hub_env)

    air = after[(AIR, "air_quality")]
    assert air["accepted"] - was["accepted"] == len(good)
    assert air["refused"] - was["refused"] == len(bad)
    assert air["acknowledged"] - was["acknowledged"] == len(good) + len(bad)
    reasons = {r["reason"]: r["messages"] for r in air["reasons"]}
    old = {r["reason"]: r["messages"] for r in was["reasons"]}
    assert reasons["not_decodable"] - old.get("not_decodable", 0) == 3
    assert reasons["wrong_type"] - old.get("wrong_type", 0) == 1
    assert [r["messages"] for r in air["reasons"]] == sorted(reasons.values(), reverse=True), "commonest first"
    assert after[(AIR, "_unknown")]["refused"] - before.get((AIR, "_unknown"), {"refused": 0})["refused"] == 1
    assert {(p, f) for p, f in after} >= {(TRANSPORT, "parking_occupancy"), (VOLT, "charger_status")}

    table = hub_stats(hub_env, "--partner", AIR)
    assert table.returncode == 0, table.stderr
    assert "air_quality" in table.stdout and "not_decodable" in table.stdout
    assert VOLT not in table.stdout


# --- the database down and back ------------------------------------------------------------


async def test_while_the_database_is_down_ingest_sends_nothing_and_delivers_everything_once_it_is_back(
    applied: HubSettings, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    """Ingest sends a batch only while it holds its feed topics' locks in the database, so that landing never
    recreates a topic under a record in flight: with the database down it holds its PUBACKs, as with Kafka down."""
    state = applied.state_dir.resolve()
    kafka_topic = feeds[(AIR, "air_quality")].row.kafka_topic
    devices = [unique("pgdown") for _ in range(100)]
    dev = Device(applied, AIR)
    try:
        async with running_ingest(applied) as worker:
            await publish_all(dev, [(air_topic(unique("pgup")), air_payload())])  # the locks' connection is open
            assert await eventually(lambda: worker.source.acked >= 1)
            await asyncio.to_thread(stop_postgres, state)
            received, acked, batches = worker.source.received, worker.source.acked, worker.sent_batches
            await publish_all(dev, [(air_topic(d), air_payload()) for d in devices])
            assert await eventually(lambda: worker.source.received >= received + len(devices))
            failures = worker.locks.failures
            assert await eventually(lambda: worker.locks.failures >= failures + 2), "it keeps trying"
            assert (worker.source.acked, worker.sent_batches) == (acked, batches), "nothing sent, nothing acknowledged"

            await asyncio.to_thread(start_postgres, state, applied.pg_port)
            found = await read_keys(
                applied.endpoints().kafka_bootstrap, kafka_topic, {d.encode() for d in devices}, timeout_s=40
            )
            assert await eventually(lambda: worker.source.acked >= acked + len(devices), timeout_s=20)
    finally:
        dev.close()
        if postgres_process(state).pid() is None:
            start_postgres(state, applied.pg_port)
    assert len(found) == len(devices)
    # The worker's own connection was cut by the restart: leaving, it recorded its session on a new one.
    assert await session_state(applied, worker_client_id(applied, 0)) == "ended"


# --- backpressure: Kafka down and back (last in the file: it restarts a broker, if only its own) ---


class OwnKafka(NamedTuple):
    settings: HubSettings  # this broker, with the session's PostgreSQL and Mosquitto
    state: Path
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await asyncio.to_thread(kafka_process(self.state).stop)

    async def start(self) -> None:
        await asyncio.to_thread(lambda: wait_for_port(self.port, 15.0, start_kafka(self.state, self.port)))


@pytest.fixture(scope="module")
def own_kafka(applied: HubSettings) -> Iterator[OwnKafka]:
    """A Kafka-protocol broker of this module's own, so restarting it leaves the session's stack alone.

    Its settings ask for 3 partitions for the dead-letter topic, unlike the broker's default of 4,
    so a topic the broker recreated by itself would show.
    """
    state = Path(tempfile.mkdtemp(prefix="hub-test-kafka-"))
    state.chmod(0o711)
    port = free_port()
    wait_for_port(port, 15.0, start_kafka(state, port))
    # The session's database records the broker epoch of the session's broker, not this one's.
    settings = applied.replace(kafka_bootstrap=f"127.0.0.1:{port}", kafka_partitions=3, land_check_broker_epoch=False)
    yield OwnKafka(settings, state, port)
    kafka_process(state).stop()
    shutil.rmtree(state, ignore_errors=True)


async def topic_partitions(bootstrap: str) -> dict[str, int]:
    """Every topic on the broker with its partition count (asks for all topics, so creates none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["error_code"] == 0}
    finally:
        await admin.close()


async def has_topics(bootstrap: str, names: Iterable[str]) -> bool:
    try:
        partitions = await topic_partitions(bootstrap)
    except Exception:  # the broker is still starting
        return False
    return all(t in partitions for t in names)


async def test_while_kafka_is_down_ingest_holds_its_acks_and_delivers_everything_once_kafka_is_back(
    own_kafka: OwnKafka, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    settings, bootstrap = own_kafka.settings, own_kafka.bootstrap
    air = feeds[(AIR, "air_quality")].row
    devices = [unique("bp") for _ in range(200)]
    bad = air_topic(unique("bpbad"))
    dev = Device(settings, AIR)
    try:
        async with running_ingest(settings) as worker:  # leaving it re-raises anything the worker died of
            await own_kafka.stop()
            received, acked = worker.source.received, worker.source.acked
            await publish_all(dev, [(air_topic(d), air_payload()) for d in devices] + [(bad, b"{")])
            # Every message reached the worker, which cannot get Kafka's acknowledgement: no PUBACK.
            assert await eventually(lambda: worker.source.received >= received + len(devices) + 1)
            assert worker.source.acked == acked

            await own_kafka.start()
            # The restarted broker has forgotten every topic; the worker recreates them as configured
            # (the test reads only once they exist: a reader's first look could create them too).
            want = {air.kafka_topic: air.partitions, settings.kafka_dead_letter_topic: 3}
            assert await eventually(lambda: has_topics(bootstrap, want), timeout_s=30)
            found = await read_keys(bootstrap, air.kafka_topic, {d.encode() for d in devices}, timeout_s=40)
            dead = await read_keys(bootstrap, settings.kafka_dead_letter_topic, {bad.encode()})
            assert await eventually(lambda: worker.source.acked >= acked + len(devices) + 1)
    finally:
        dev.close()
    assert len(found) == len(devices), f"{len(devices) - len(found)} of {len(devices)} lost across the restart"
    assert list(dead) == [bad.encode()]
    partitions = await topic_partitions(bootstrap)
    assert {t: partitions.get(t) for t in want} == want


async def test_a_worker_stopped_while_kafka_is_down_stops_and_leaves_its_messages_to_its_successor(
    own_kafka: OwnKafka, feeds: dict[tuple[str, str], FeedRuntime]
) -> None:
    settings = own_kafka.settings
    kafka_topic = feeds[(AIR, "air_quality")].row.kafka_topic
    devices = [unique("held") for _ in range(50)]
    dev = Device(settings, AIR)
    try:
        stop = asyncio.Event()
        # Without a bound on waiting for Kafka, stopping would hang here until Kafka came back.
        async with IngestWorker(settings, settings.endpoints(), 0, leave_timeout_s=1.0) as worker:
            task = asyncio.create_task(worker.run(stop))
            await own_kafka.stop()
            await publish_all(dev, [(air_topic(d), air_payload()) for d in devices])
            assert await eventually(lambda: worker.source.received >= len(devices))
            stop.set()
            await task
        assert worker.source.acked == 0 and not worker.session_ended
        assert await session_state(settings, worker_client_id(settings, 0)) == "active", (
            "the session, and what it holds, stays"
        )

        await own_kafka.start()
        async with running_ingest(settings):
            found = await read_keys(own_kafka.bootstrap, kafka_topic, {d.encode() for d in devices}, timeout_s=30)
    finally:
        dev.close()
    assert len(found) == len(devices)


async def test_a_partner_applied_while_ingest_runs_is_ingested_from_its_first_message_without_a_restart(
    applied: HubSettings, tmp_path: Path
) -> None:
    """Its first message, published right after `hub apply` and long before the worker's next periodic
    look at the catalog, is routed once the worker has read the catalog again, not dropped or refused."""
    from hub.control.apply import apply
    from tests.integration.test_onboarding import workspace

    settings = applied.replace(catalog_reload_s=3600.0)
    ws = workspace(tmp_path).write()
    async with running_ingest(settings):
        result = await apply(settings, ws.config, ws.schemas, broker=LocalBrokerAuth(settings))
        partner_credentials.save_all(settings, partner_credentials.default_dir(settings), result.credentials)
        device = unique("gauge")
        dev = Device(settings, ws.partner)
        try:
            dev.publish(f"partners/{ws.partner}/rivers/{device}/level", json.dumps({"ts": time.time(), "lvl": 1.5}))
            assert list((await dev.wait_acks(1)).values()) == ["Success"]
        finally:
            dev.close()
        records = await read_topic(settings, ws.topic, match=lambda r: r.key == device.encode())
    assert len(records) == 1
