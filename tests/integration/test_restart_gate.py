"""Mosquitto killed with SIGKILL loses no acknowledged message: the stack's supervisor restarts it behind a gate.

Mosquitto 2.0.11 does not restore the ingest workers' shared subscriptions after it died, so a device that
publishes to the restarted broker before they have subscribed again got its PUBACK and the message went to
no one (`hub drill` measured 0 to 298 lost per kill). Now the supervisor disables partners' logins in the
broker's accounts file before it starts the broker, and enables them again once every running ingest worker
has a SUBACK later than the restart: a device is refused at CONNECT meanwhile, keeps its messages and sends
them once it is let in. No ingest worker running: the gate opens at once; one that never subscribes: it
opens after `stack_gate_timeout_s`, with a warning that `hub stack status` shows; a supervisor that dies
mid-gate leaves it to the next supervisor, which opens it.

On the same stack, as it kills a server too: after PostgreSQL is killed under a running ingest worker, the
worker still acknowledges (PUBACKs) what landed. Its poller of landed offsets used to die of a driver error
that was not taken for a database failure (`InternalClientError`, "another operation is in progress"), and
then nothing was acknowledged any more: once the worker held `max_inflight_messages`, the broker delivered it
nothing more, and every later message waited in the broker (`hub drill` at 400 msg/s: "nothing landed").

A stack of this module's own: it kills its Mosquitto, its PostgreSQL and its supervisor.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub import worker_registry
from hub.ingest import identity
from hub.mqtt_auth.dynsec import DynsecBroker
from hub.settings import HubSettings
from hub.stack import broker_gate
from hub.stack.events import Event, read_events
from hub.stack.local import LocalStack, stack_summary
from hub.stack.supervisor_process import events_path, start_supervisor, supervisor_process
from hub.worker_registry import WorkerRecord
from tests.integration.support import (
    apply_examples,
    device_login,
    eventually,
    private_stack,
    run_sync,
    running_ingest,
    running_land,
    unique,
)

pytestmark = pytest.mark.timeout(240)

AIR = "uni_air_lab"
TABLE = "uni_air_lab.air_quality"


@pytest.fixture(scope="module")
def stack() -> Iterator[HubSettings]:
    with private_stack("hub-test-gate-") as settings:
        yield apply_examples(settings)


class Publisher:
    """A partner's device as the drill runs one: paho, MQTT v5, QoS 1, reconnecting by itself every 1-2 s and
    keeping what it could not send meanwhile; each message's PUBACK and each CONNACK recorded."""

    def __init__(self, settings: HubSettings) -> None:
        self.username, password = device_login(settings, AIR)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.username, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(self.username, password)
        self.client.reconnect_delay_set(1, 2)
        self.client.max_inflight_messages_set(1000)
        self.connacks: list[str] = []
        self.acks: dict[int, bool] = {}  # mid -> acknowledged (not refused)
        self.mids: list[int] = []  # per message, in order
        self._lock = threading.Lock()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connacks.append(str(reason))
        self.client.on_publish = self._on_publish
        address = settings.endpoints().mqtt()
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            self.acks[mid] = not reason.is_failure

    def publish(self, device: str, t_ms: int) -> None:
        body = json.dumps({"t": t_ms, "pm2_5": 1.0, "pm10": 2.0, "temp_f": 68.0, "rh": 40.0})
        self.mids.append(self.client.publish(f"partners/{AIR}/stations/{device}/air", body, qos=1).mid)

    def acknowledged(self) -> list[int]:
        """The indexes of the messages the broker acknowledged."""
        with self._lock:
            return [i for i, mid in enumerate(self.mids) if self.acks.get(mid)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def events(settings: HubSettings, since: float) -> list[Event]:
    return [e for e in read_events(events_path(settings.state_dir)) if e.at >= since and e.server == "mosquitto"]


async def gate_opened(settings: HubSettings, since: float, timeout_s: float = 60.0) -> Event:
    def opened() -> Event | None:
        return next((e for e in events(settings, since) if e.event == "gate opened"), None)

    assert await eventually(opened, timeout_s, 0.1), f"the gate did not open: {events(settings, since)}"
    found = opened()
    assert found is not None
    return found


def kill_mosquitto(settings: HubSettings) -> float:
    pid = LocalStack(settings).process("mosquitto").pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return time.time()


def connack_of(settings: HubSettings, login: tuple[str, str]) -> str:
    """What the broker answers a CONNECT of this login (MQTT v5)."""
    answered: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=login[0], protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(*login)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        answered.append(str(reason))
        done.set()

    client.on_connect = on_connect
    address = settings.endpoints().mqtt()
    client.connect(address.host, address.port, 10)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return answered[0] if answered else "no CONNACK"


async def mosquitto_status(settings: HubSettings) -> dict[str, object]:
    """`hub stack status --json`'s row of Mosquitto (its probes run their own event loops: not on this one)."""
    row: dict[str, object] = stack_summary(await asyncio.to_thread(LocalStack(settings).status))["mosquitto"]
    return row


def disabled_logins(settings: HubSettings) -> list[str]:
    accounts = run_sync(DynsecBroker.from_settings(settings).accounts())
    return sorted(name for name, c in accounts.clients.items() if c.disabled)


def fake_ingest_worker(settings: HubSettings) -> tuple[subprocess.Popen[bytes], WorkerRecord]:
    """A running process recorded as an ingest worker that never subscribes (hung while starting, say)."""
    proc = subprocess.Popen(["sleep", "300"])
    started = worker_registry.started_at(proc.pid)
    assert started is not None
    record = WorkerRecord("ingest", 9, proc.pid, started, time.time(), "hub-ingest-test-9", None, None)
    worker_registry.register_worker(settings.state_dir, record)
    return proc, record


async def landed_keys(settings: HubSettings, device: str, base_ms: int) -> set[int]:
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        rows = await conn.fetch(
            f"SELECT (extract(epoch FROM time) * 1000)::bigint AS t FROM {TABLE} WHERE device_id = $1", device
        )
    finally:
        await conn.close()
    return {int(r["t"]) - base_ms for r in rows}


async def test_mosquitto_killed_mid_stream_loses_no_acknowledged_message(stack: HubSettings) -> None:
    # This process is the ingest worker the gate waits for, as `hub run` records its workers.
    me = os.getpid()
    started = worker_registry.started_at(me)
    assert started is not None
    client_id = identity.worker_client_id(stack, 0)
    record = worker_registry.register_worker(
        stack.state_dir, WorkerRecord("ingest", 0, me, started, time.time(), client_id, None, None)
    )
    device, base_ms, rate = unique("gate"), int(time.time() * 1000) - 3_600_000, 200.0
    publisher = Publisher(stack)
    try:
        async with running_land(stack), running_ingest(stack):
            assert worker_registry.running_workers(stack.state_dir)[0].subscribed_at is not None
            begun, killed_at, i = time.monotonic(), 0.0, 0
            while time.monotonic() - begun < 5.0:
                due = int((time.monotonic() - begun) * rate)
                while i < due:
                    publisher.publish(device, base_ms + i)
                    i += 1
                if not killed_at and time.monotonic() - begun >= 1.5:
                    killed_at = kill_mosquitto(stack)
                await asyncio.sleep(0.01)
            opened = await gate_opened(stack, killed_at)
            # The device was kept out, not dropped: everything it published is acknowledged once it is let in.
            assert await eventually(lambda: len(publisher.acknowledged()) == i, 60, 0.2), (
                f"{len(publisher.acknowledged())} of {i} acknowledged; CONNACKs {publisher.connacks}"
            )
            acked = set(publisher.acknowledged())
            landed: set[int] = set()

            async def all_landed() -> bool:
                nonlocal landed
                landed = await landed_keys(stack, device, base_ms)
                return acked <= landed

            await eventually(all_landed, 60, 0.5)
    finally:
        publisher.close()
        worker_registry.unregister(record)
    lost = sorted(acked - landed)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost (first {lost[:5]})"
    closed = [e for e in events(stack, killed_at) if e.event == "gate closed"]
    assert closed and closed[0].at <= opened.at
    assert "ingest-0 subscribed again" in opened.detail
    print(f"{i} published, {len(acked)} acknowledged, all landed; gate: {opened.detail}; CONNACKs {publisher.connacks}")
    assert disabled_logins(stack) == []
    assert broker_gate.read_gate(stack.state_dir) is None


async def test_with_no_ingest_worker_running_the_gate_opens_at_once(stack: HubSettings) -> None:
    login = device_login(stack, AIR)
    killed_at = kill_mosquitto(stack)
    opened = await gate_opened(stack, killed_at)
    assert "no ingest worker runs" in opened.detail
    assert float(opened.detail.split()[1]) < 5.0  # "after 0.4 s: ..."
    assert connack_of(stack, login) == "Success"
    assert disabled_logins(stack) == []


async def test_a_supervisor_killed_mid_gate_leaves_no_login_disabled_after_the_next_pass(stack: HubSettings) -> None:
    login = device_login(stack, AIR)
    worker, _record = fake_ingest_worker(stack)
    try:
        killed_at = kill_mosquitto(stack)

        def closed() -> bool:
            restarted = any(e.event == "restarted" for e in events(stack, killed_at))
            return restarted and broker_gate.read_gate(stack.state_dir) is not None

        assert await eventually(closed, 30, 0.1)
        assert connack_of(stack, login) == "Not authorized"  # held: the worker has not subscribed
        mosquitto = await mosquitto_status(stack)
        assert "restart gate closed for" in str(mosquitto["detail"])
        assert login[0] in disabled_logins(stack)

        supervisor = supervisor_process(stack.state_dir)
        pid = supervisor.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # mid-gate
        await asyncio.sleep(0.5)
        assert broker_gate.read_gate(stack.state_dir) is not None
    finally:
        worker.kill()  # its record is dropped when next read: its process is gone
        worker.wait()
    again = time.time()
    start_supervisor(stack)  # as `hub stack up` does
    opened = await gate_opened(stack, again)
    assert "no ingest worker runs" in opened.detail
    assert disabled_logins(stack) == []
    assert connack_of(stack, login) == "Success"


async def test_an_ingest_worker_that_never_subscribes_holds_the_gate_only_until_the_bound(stack: HubSettings) -> None:
    supervisor_process(stack.state_dir).stop()
    start_supervisor(stack.replace(stack_gate_timeout_s=2.0))
    login = device_login(stack, AIR)
    worker, _record = fake_ingest_worker(stack)
    try:
        killed_at = kill_mosquitto(stack)
        opened = await gate_opened(stack, killed_at)
        assert "without a SUBACK from ingest-9" in opened.detail
        assert 2.0 <= opened.at - killed_at < 10.0
        assert connack_of(stack, login) == "Success"
        mosquitto = await mosquitto_status(stack)
        assert "gate opened: after" in str(mosquitto["last_event"])
        assert "without a SUBACK" in str(mosquitto["last_event"])
        log = supervisor_process(stack.state_dir).log_path.read_text()
        assert "WARNING" in next(line for line in log.splitlines() if "without a SUBACK" in line)
    finally:
        worker.kill()
        worker.wait()


async def test_after_postgresql_is_killed_ingest_still_acknowledges_what_landed(stack: HubSettings) -> None:
    device, base_ms, rate = unique("pgkill"), int(time.time() * 1000) - 3_600_000, 200.0
    publisher = Publisher(stack)
    try:
        async with running_land(stack), running_ingest(stack) as ingest:
            begun, killed, i = time.monotonic(), False, 0
            while time.monotonic() - begun < 5.0:
                due = int((time.monotonic() - begun) * rate)
                while i < due:
                    publisher.publish(device, base_ms + i)
                    i += 1
                if not killed and time.monotonic() - begun >= 1.5:
                    pid = LocalStack(stack).process("postgres").pid()
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)  # the stack's supervisor starts it again
                    killed = True
                await asyncio.sleep(0.01)
            assert await eventually(lambda: len(publisher.acknowledged()) == i, 60, 0.2)

            async def all_landed() -> bool:
                try:
                    return len(await landed_keys(stack, device, base_ms)) >= i
                except (OSError, asyncpg.PostgresError):  # the restarted server still recovering
                    return False

            assert await eventually(all_landed, 90, 0.5), "every message landed"
            # ... and the worker acknowledged them to the broker: nothing is left waiting in it.
            acknowledged = await eventually(lambda: ingest.waiting.messages == 0 and ingest.source.outstanding == 0, 30)
            assert acknowledged, f"{ingest.waiting.messages} landed messages never acknowledged by ingest"
    finally:
        publisher.close()
