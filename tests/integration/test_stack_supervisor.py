"""The local stack's servers are supervised: a server killed with SIGKILL is started again by the hub, the
event is logged and shown by `hub stack status` (and --json), and after the Kafka broker restarts the applied
feeds' topics exist again. `hub stack down` stops the supervisor first, so nothing it stops comes back.

A private stack of its own: it kills its servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from hub.kafka import KafkaAdmin
from hub.settings import HubSettings
from hub.stack.local import LocalStack, stack_summary
from hub.stack.supervisor_process import events_path, supervisor_process
from tests.integration.support import apply_examples, private_stack

FEED_TOPICS = {
    "hub.city_transport.traffic_counts",
    "hub.city_transport.parking_occupancy",
    "hub.uni_air_lab.air_quality",
    "hub.uni_air_lab.noise_levels",
    "hub.voltcharge.charger_status",
    "hub.dead-letter",
}


@pytest.fixture(scope="module")
def own_stack() -> Iterator[HubSettings]:
    with private_stack("hub-supervised-") as settings:
        yield apply_examples(settings)


def status_json(settings: HubSettings) -> dict[str, dict[str, object]]:
    """What `hub stack status --json` prints."""
    parsed: dict[str, dict[str, object]] = json.loads(json.dumps(stack_summary(LocalStack(settings).status())))
    return parsed


def healthy_again(stack: LocalStack, name: str, old_pid: int, timeout_s: float = 60.0) -> float:
    """Seconds until `name` runs under a new PID and answers."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        pid = stack.process(name).pid()
        if pid is not None and pid != old_pid and next(s for s in stack.status() if s.name == name).healthy:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{name} was not started again within {timeout_s:.0f} s")


@pytest.mark.parametrize("name", ["mosquitto", "kafka", "postgres"])
def test_a_killed_server_is_started_again_and_the_restart_is_shown(own_stack: HubSettings, name: str) -> None:
    stack = LocalStack(own_stack)
    pid = stack.process(name).pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # nothing restarted it until a person ran `hub stack up`

    healthy_again(stack, name, pid)

    # Mosquitto's last event is its restart gate opening (no ingest worker runs here: at once).
    last = "gate opened: after" if name == "mosquitto" else "restarted: in "
    deadline = time.monotonic() + 10
    while last not in str(status_json(own_stack)[name]["last_event"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = status_json(own_stack)[name]
    assert status["healthy"] is True
    assert status["restarts"] == 1
    assert last in str(status["last_event"])
    log = supervisor_process(own_stack.state_dir).log_path.read_text()
    assert f"{name} crashed: pid {pid} is gone" in log and f"{name} restarted" in log


def test_after_the_kafka_broker_restarts_the_feed_topics_exist_again(own_stack: HubSettings) -> None:
    async def topics() -> set[str]:
        async with KafkaAdmin(own_stack, own_stack.endpoints().kafka_bootstrap) as admin:
            return await admin.topics()

    assert FEED_TOPICS <= asyncio.run(topics())
    events = events_path(own_stack.state_dir).read_text()
    assert '"server": "kafka", "event": "topics recreated", "detail": "6 topics of applied feeds"' in events


def test_down_stops_the_supervisor_first_so_nothing_comes_back(own_stack: HubSettings) -> None:
    stack = LocalStack(own_stack)
    stopped = stack.down()
    assert stopped[0] == "supervisor"
    time.sleep(2 * own_stack.stack_supervise_every_s + 0.5)
    assert all(stack.process(name).pid() is None for name in ("postgres", "kafka", "mosquitto", "api", "supervisor"))
