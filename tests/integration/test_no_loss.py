"""Every acknowledged message is a row, a duplicate, a dead letter or an exactly counted loss: faults on real servers.

Each test runs a stream of device messages through Mosquitto, ingest, the Kafka-protocol broker,
landing and PostgreSQL, puts a fault in its way, and reconciles what the broker acknowledged to
the device with what the database holds and what `hub stats` says:
acknowledged = accepted (rows) + duplicates + refused (dead letters) + lost, exactly.

A stack of this module's own: killing its Kafka broker leaves the session's alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from hub.catalog.topics import ensure_feed_topics
from hub.db import connection
from hub.ingest.landed_acks import ack_mode
from hub.ingest.stats import ingest_stats
from hub.stack import servers
from hub.stack.local import cli_env
from hub.stack.process import wait_for_port
from tests.integration.support import (
    Device,
    Subscriber,
    apply_examples,
    credentials,
    eventually,
    header,
    own_group,
    private_stack,
    query,
    read_topic,
    running_ingest,
    running_land,
    unique,
)

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
AIR = "uni_air_lab"
TABLE = "uni_air_lab.air_quality"


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    with private_stack("hub-test-noloss-") as settings:
        yield apply_examples(settings)


def topic(device: str) -> str:
    return f"partners/{AIR}/stations/{device}/air"


def reading(t_ms: int, pm25: float = 1.0) -> str:
    return json.dumps({"t": t_ms, "pm2_5": pm25, "pm10": 2.0, "temp_f": 68.0, "rh": 40.0})


async def air_stats(settings: Any) -> dict[str, int]:
    async with connection(settings.endpoints().database_url) as conn:
        found = {(s.partner, s.feed): s for s in await ingest_stats(conn, AIR)}
    s = found[(AIR, "air_quality")]
    return {
        "acknowledged": s.acknowledged,
        "accepted": s.accepted,
        "duplicates": s.duplicates,
        "refused": s.refused,
        "lost": s.lost,
        "redelivered": s.redelivered,
        **{f"refused:{r}": n for r, n in s.reasons},
    }


def hub_stats(settings: Any) -> dict[str, Any]:
    """`hub stats --json` for the air-quality feed, as an operator reads it."""
    out = subprocess.run(
        [sys.executable, "-m", "hub", "stats", "--json", "--partner", AIR],
        env=cli_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return next(r for r in json.loads(out.stdout) if r["feed"] == "air_quality")


def since(before: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


async def rows(settings: Any, devices: list[str]) -> int:
    return int(await query(settings, f"SELECT count(*) FROM {TABLE} WHERE device_id = ANY($1::text[])", devices))


async def counted(settings: Any, before: dict[str, int], n: int, timeout_s: float = 60.0) -> dict[str, int]:
    """Wait until `hub stats` accounts for `n` more acknowledged messages; returns what changed."""
    changed: dict[str, int] = {}

    async def done() -> bool:
        nonlocal changed
        changed = since(before, await air_stats(settings))
        return changed.get("acknowledged", 0) >= n

    assert await eventually(done, timeout_s, interval_s=0.25), f"{n} more acknowledged, but only {changed} counted"
    return changed


async def stream(dev: Device, devices: list[str], n: int, per_second: float, fault_at: int, fault: Any) -> None:
    """Publish `n` distinct readings, one per device in turn, and run `fault()` after the `fault_at`-th."""
    start_ms = int(time.time() * 1000) - 3_600_000
    start = time.monotonic()
    already = len(dev.acks)
    for i in range(n):
        dev.publish(topic(devices[i % len(devices)]), reading(start_ms + i))
        if i == fault_at:
            await fault()
        if i % 20 == 19:
            ahead = start + (i + 1) / per_second - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    acks = list((await dev.wait_acks(already + n, timeout_s=30)).values())[already:]
    assert len(acks) == n and set(acks) == {"Success"}


async def records_lost(settings: Any) -> int:
    return int(await query(settings, "SELECT coalesce((SELECT records_lost FROM hub.land_broker), 0)"))


async def restart_kafka(settings: Any) -> None:
    """kill -9 of the Kafka broker, then started again as `hub stack up` would (its topics recreated).

    The stack's supervisor starts a broker that died: the test waits for it rather than starting one too (both
    starting raced: two brokers, and the PID file naming the one that lost the port)."""
    state = settings.state_dir.resolve()
    proc = servers.kafka_process(state)
    pid = proc.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    if settings.stack_supervise:
        assert await eventually(lambda: proc.pid() not in (None, pid), timeout_s=30, interval_s=0.1)
        await asyncio.to_thread(wait_for_port, settings.kafka_port, 15.0, proc)
    else:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(
            lambda: wait_for_port(settings.kafka_port, 15.0, servers.start_kafka(state, settings.kafka_port))
        )
    await ensure_feed_topics(settings)


# --- finding 3: the local broker restarted mid-stream ------------------------------------


async def test_a_kafka_broker_killed_mid_stream_loses_nothing_when_ingest_acknowledges_after_landing(
    stack: Any,
) -> None:
    """The local stack's default: ingest PUBACKs only what landing stored; what the broker lost is sent again."""
    settings = own_group(stack)
    assert settings.ingest_ack == "auto" and ack_mode(settings, settings.endpoints()) == "landed"
    devices = [unique("bkill") for _ in range(100)]
    n = 2000
    before = await air_stats(settings)
    dev = Device(settings, AIR)
    try:
        async with running_land(settings.replace(land_retry_max_s=1.0)), running_ingest(settings):
            await stream(dev, devices, n, per_second=1000, fault_at=n // 2, fault=lambda: restart_kafka(settings))
            changed = await counted(settings, before, n)
    finally:
        dev.close()
    landed = await rows(settings, devices)
    print(f"broker killed at {n // 2} of {n}: {landed} rows; hub stats {changed}")
    assert landed == n
    assert changed["acknowledged"] == changed["accepted"] == n and "lost" not in changed
    assert "duplicates" not in changed and "refused" not in changed, "the hub's own resends are not duplicates"
    event = await query(settings, "SELECT detail FROM hub.land_events WHERE kind = 'broker-reset' ORDER BY id DESC")
    assert "and with it 0 records acknowledged" in event


async def test_acknowledging_after_kafkas_ack_a_broker_restart_loses_records_and_hub_stats_counts_them_exactly(
    stack: Any,
) -> None:
    """HUB_INGEST_ACK=kafka on a broker that is not durable: what was acknowledged and not landed is lost, and
    counted exactly from what ingest recorded with each acknowledgement (not an upper bound from log ends)."""
    settings = own_group(stack).replace(ingest_ack="kafka")
    devices = [unique("kack") for _ in range(50)]
    first, second = 600, 400
    start_ms = int(time.time() * 1000) - 3_600_000
    before = await air_stats(settings)
    lost_before = await records_lost(settings)
    dev = Device(settings, AIR)
    try:
        async with running_ingest(settings) as ingest:
            async with running_land(settings):
                for i in range(first):
                    dev.publish(topic(devices[i % 50]), reading(start_ms + i))
                assert await eventually(lambda: rows(settings, devices), timeout_s=30)
                await counted(settings, before, first)
            # Landing stopped: the next ones are acknowledged once Kafka has them, and stay unlanded.
            for i in range(first, first + second):
                dev.publish(topic(devices[i % 50]), reading(start_ms + i))
            assert await eventually(lambda: ingest.source.acked >= first + second, timeout_s=30)
        await restart_kafka(settings)
        async with running_land(settings):
            changed = await counted(settings, before, first + second)
    finally:
        dev.close()
    landed = await rows(settings, devices)
    shown = hub_stats(settings)
    print(f"{first} landed, {second} acknowledged and unlanded at the restart: {landed} rows; hub stats {changed}")
    assert landed == first
    assert changed == {"acknowledged": first + second, "accepted": first, "lost": second}
    assert (
        shown["lost"] >= second
        and shown["acknowledged"] == shown["accepted"] + shown["duplicates"] + shown["refused"] + shown["lost"]
    )
    assert await records_lost(settings) - lost_before == second
    event = await query(settings, "SELECT detail FROM hub.land_events WHERE kind = 'broker-reset' ORDER BY id DESC")
    assert f"and with it {second} records acknowledged" in event


# --- finding 4: a repeated key --------------------------------------------------------------


async def test_a_different_reading_for_a_landed_key_is_dead_lettered_and_reported_and_an_identical_one_counted(
    stack: Any,
) -> None:
    settings = own_group(stack)
    t = int(time.time() * 1000) - 3_600_000
    landed_first, in_one_batch = unique("dkey"), unique("dkey")
    creds = credentials(settings, AIR)
    reports = Subscriber(settings, creds["username"], creds["password"], f"{settings.mqtt_error_root}/{AIR}/#")
    before = await air_stats(settings)
    dev = Device(settings, AIR)
    try:
        async with running_ingest(settings):
            async with running_land(settings):
                dev.publish(topic(landed_first), reading(t, 1.0))
                assert await eventually(lambda: rows(settings, [landed_first]), timeout_s=30)
                dev.publish(topic(landed_first), reading(t, 99.0))  # another value for a time already landed
                dev.publish(topic(landed_first), reading(t, 1.0))  # the same reading again (a QoS 1 retry)
                await counted(settings, before, 3)
            # With landing stopped, three readings of one key reach Kafka and then one landing batch.
            for pm25 in (5.0, 6.0, 5.0):
                dev.publish(topic(in_one_batch), reading(t, pm25))
            await dev.wait_acks(6)
            async with running_land(settings):
                changed = await counted(settings, before, 6)
        await reports.wait_for(2, timeout_s=10)
        await asyncio.sleep(0.5)  # a third report (there must be none) would have arrived by now
    finally:
        dev.close()
        reports.close()
    assert await rows(settings, [landed_first, in_one_batch]) == 2
    assert changed == {
        "acknowledged": 6,
        "accepted": 2,
        "duplicates": 2,
        "refused": 2,
        "refused:duplicate_key": 2,
    }, "acknowledged = rows + dead letters + counted duplicates"
    got = [json.loads(p) for _t, p in reports.messages]
    assert sorted(r["topic"] for r in got) == sorted([topic(landed_first), topic(in_one_batch)])
    assert {r["reason"] for r in got} == {"duplicate_key"}
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000))
    assert all(when in r["message"] and "pm25" in r["message"] for r in got), got
    letters = await read_topic(
        settings,
        settings.kafka_dead_letter_topic,
        match=lambda r: (
            header(r, "reason") == b"duplicate_key" and r.key in (landed_first.encode(), in_one_batch.encode())
        ),
        n=2,
    )
    assert len(letters) == 2 and {header(r, "stage") for r in letters} == {b"landing"}


# --- issue 19: counters that survive a worker crash ----------------------------------------


def start_ingest_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`hub run ingest`: a supervisor and its worker, in a process group of their own."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "ingest"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a service manager stops it; whatever is left after a minute is killed."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.parametrize("mode", ["landed", "kafka"])
async def test_an_ingest_worker_killed_mid_stream_leaves_hub_stats_exact(stack: Any, mode: str, tmp_path: Path) -> None:
    settings = own_group(stack)
    devices = [unique("ikill") for _ in range(100)]
    n, invalid = 1500, 5
    before = await air_stats(settings)
    started = await query(settings, "SELECT now()")
    env = {**cli_env(settings), "HUB_INGEST_ACK": mode}
    supervisor = await asyncio.to_thread(start_ingest_process, env, tmp_path / "ingest.log")
    dev = Device(settings, AIR)
    try:
        active = (
            "SELECT count(*) FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active' AND updated_at > $1"
        )
        assert await eventually(lambda: query(settings, active, started), timeout_s=30), "the worker subscribed"
        async with running_land(settings):
            for _ in range(invalid):  # refused ones, counted before the crash
                dev.publish(topic(unique("bad")), b"{")
            await counted(settings, before, invalid)

            async def kill_worker() -> None:
                """kill -9 of the worker alone, as the OOM killer would; the supervisor starts it again."""
                children = psutil.Process(supervisor.pid).children()
                [worker] = [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
                worker.kill()
                await asyncio.to_thread(worker.wait, 10)

            await stream(dev, devices, n, per_second=800, fault_at=n // 2, fault=kill_worker)
            await counted(settings, before, n + invalid)
            await asyncio.to_thread(stop_process_group, supervisor)  # while landing runs: it leaves nothing waiting
        changed = since(before, await air_stats(settings))
    finally:
        dev.close()
        if supervisor.poll() is None:
            await asyncio.to_thread(stop_process_group, supervisor)
    landed = await rows(settings, devices)
    print(f"{mode}: worker killed at {n // 2} of {n}: {landed} rows; hub stats {changed}")
    assert landed == n
    redelivered = changed.pop("redelivered", 0)
    assert changed == {
        "acknowledged": n + invalid,
        "accepted": n,
        "refused": invalid,
        "refused:not_decodable": invalid,
    }, f"counted exactly ({redelivered} of the hub's own redeliveries were landed once and not counted twice)"
