"""Operations, as an operator sees them: `hub run` started by hand is listed by `hub stack status` (and --json) with
each worker's kind, pid, client id, health and metrics address; a second `hub run` joins with ids of its own; every
worker and the API serve Prometheus metrics counted per batch; landing's offsets reach the Kafka group; logs are JSON
lines without secrets; `hub stack down` stops the workers first, the user's `hub run` included.

One private stack for the module: the last test stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.settings import HubSettings
from hub.stack.local import cli_env
from tests.integration.support import (
    Device,
    apply_examples,
    eventually,
    private_stack,
    query,
    unique,
)

REPO = Path(__file__).resolve().parents[2]
AIR = "uni_air_lab"


def air_topic(device: str) -> str:
    return f"partners/{AIR}/stations/{device}/air"


@pytest.fixture(scope="module")
def ops_stack() -> Iterator[HubSettings]:
    with private_stack("hub-ops-") as settings:
        yield apply_examples(settings)


@pytest.fixture(scope="module")
def env(ops_stack: HubSettings) -> dict[str, str]:
    return {**cli_env(ops_stack), "HUB_LOG_FORMAT": "json"}


def hub(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )


def status(env: dict[str, str]) -> dict[str, Any]:
    result = hub(env, "stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def ready_workers(env: dict[str, str]) -> list[dict[str, Any]]:
    return [w for w in status(env)["workers"] if w["healthy"]]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (a loopback address of ours)
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text exposition (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


def start_hub_run(env: dict[str, str], args: list[str], out: Any) -> subprocess.Popen[bytes]:
    """`hub run ARGS` in a process group of its own (a user's terminal), its output to `out`."""
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "run", *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hub_run(env: dict[str, str], ops_stack: HubSettings) -> Iterator[subprocess.Popen[bytes]]:
    """`hub run` as a user starts it in a terminal: its own process group, JSON logs to a file."""
    log = (ops_stack.state_dir / "hub-run.log").open("wb")
    proc = start_hub_run(env, [], log)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    log.close()


async def test_stack_status_lists_every_running_worker_with_its_client_id_health_and_metrics_address(
    env: dict[str, str], hub_run: subprocess.Popen[bytes]
) -> None:
    assert await eventually(lambda: asyncio.to_thread(lambda: len(ready_workers(env)) == 3), timeout_s=90)
    workers = {w["kind"]: w for w in status(env)["workers"]}
    assert set(workers) == {"ingest", "land", "share"}
    for kind, w in workers.items():
        assert w["health"] == "ready" and w["supervisor"] == hub_run.pid
        assert w["client_id"].startswith(f"hub-{kind}-") and w["client_id"].endswith("-0")
        assert w["metrics"].startswith("http://127.0.0.1:") and w["since"].endswith("Z")
        assert psutil.Process(w["pid"]).ppid() == hub_run.pid
    # While the CPUs are saturated, sharing yields them to the data path (HUB_SHARE_NICE, default 10).
    assert os.getpriority(os.PRIO_PROCESS, workers["share"]["pid"]) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    assert os.getpriority(os.PRIO_PROCESS, workers["ingest"]["pid"]) == os.getpriority(os.PRIO_PROCESS, 0)
    # Large buffers go back to the system once freed (hub/supervise.py, MALLOC_ENV).
    for w in workers.values():
        assert psutil.Process(w["pid"]).environ().get("MALLOC_MMAP_THRESHOLD_") == "131072"
    text = hub(env, "stack", "status")
    assert text.returncode == 0
    for w in workers.values():
        assert f"{w['kind']}-0" in text.stdout and str(w["pid"]) in text.stdout
    widest = max(text.stdout.splitlines(), key=len)
    assert len(widest) <= 80, f"readable in an 80-column terminal: {widest!r}"


async def test_a_second_hub_run_joins_with_client_ids_of_its_own(
    env: dict[str, str], hub_run: subprocess.Popen[bytes], ops_stack: HubSettings
) -> None:
    second = start_hub_run(env, ["ingest"], subprocess.DEVNULL)
    try:
        assert await eventually(lambda: asyncio.to_thread(lambda: len(ready_workers(env)) == 4), timeout_s=90)
        ingest = sorted((w for w in status(env)["workers"] if w["kind"] == "ingest"), key=lambda w: w["index"])
        assert [w["index"] for w in ingest] == [0, 1]
        assert ingest[0]["client_id"] != ingest[1]["client_id"]
        assert ingest[1]["supervisor"] == second.pid
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 60) == 0
    assert await eventually(lambda: asyncio.to_thread(lambda: len(status(env)["workers"]) == 3), timeout_s=30)


async def test_workers_and_the_api_serve_metrics_counted_per_batch(
    env: dict[str, str], hub_run: subprocess.Popen[bytes], ops_stack: HubSettings
) -> None:
    workers = {w["kind"]: w for w in status(env)["workers"]}
    before = scrape(workers["ingest"]["metrics"])
    devices = [unique("metrics") for _ in range(40)]
    dev = Device(ops_stack, AIR)
    try:
        for d in devices:
            dev.publish(
                air_topic(d),
                orjson.dumps({"t": int(time.time() * 1000), "pm2_5": 3.5, "pm10": 20.0, "temp_f": 50.0, "rh": 40.0}),
            )
        dev.publish(air_topic(devices[0]), b"not json")
        assert len(await dev.wait_acks(len(devices) + 1, timeout_s=60)) == len(devices) + 1
    finally:
        dev.close()
    accepted = {"partner": AIR, "feed": "air_quality"}

    def counted() -> bool:
        after = scrape(workers["land"]["metrics"])
        return sample(after, "hub_land_rows_total", **accepted) >= len(devices)

    assert await eventually(lambda: asyncio.to_thread(counted), timeout_s=60)
    ingest = scrape(workers["ingest"]["metrics"])
    grew = sample(ingest, "hub_ingest_messages_accepted_total", **accepted) - sample(
        before, "hub_ingest_messages_accepted_total", **accepted
    )
    assert grew == len(devices)
    assert sample(ingest, "hub_ingest_messages_refused_total", reason="not_decodable", **accepted) >= 1
    assert sample(ingest, "hub_ingest_batch_messages_count") >= 1
    assert sample(ingest, "hub_server_up", server="Kafka") == 1
    assert sample(ingest, "process_resident_memory_bytes") > 0
    assert sample(ingest, "hub_worker_info", kind="ingest", client_id=workers["ingest"]["client_id"]) == 1
    land = scrape(workers["land"]["metrics"])
    assert sample(land, "hub_land_batch_duration_seconds_count") >= 1
    assert sample(land, "hub_land_lag_records", topic="hub.uni_air_lab.air_quality") == 0
    api = scrape(ops_stack.endpoints().registry_url + "/metrics")
    assert sample(api, "hub_api_requests_total") >= 0 and "process_resident_memory_bytes" in api


async def test_landing_commits_its_offsets_to_the_kafka_group_for_kafkas_tools(
    ops_stack: HubSettings, hub_run: subprocess.Popen[bytes]
) -> None:
    topic = "hub.uni_air_lab.air_quality"
    found = await query(
        ops_stack,
        "SELECT json_object_agg(kafka_partition, next_offset) FROM hub.land_offsets"
        " WHERE topic = $1 AND next_offset > 0",
        topic,
    )
    stored = {int(p): int(o) for p, o in json.loads(found).items()}
    assert stored, "the test before landed rows"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=ops_stack.endpoints().kafka_bootstrap, group_id=ops_stack.land_group, enable_auto_commit=False
    )
    await consumer.start()
    try:

        async def committed_as_stored() -> bool:
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in stored} == stored

        assert await eventually(committed_as_stored, timeout_s=30)  # committed in the background, after the database
    finally:
        await consumer.stop()


async def test_stack_down_stops_the_users_hub_run_first_and_its_logs_are_json_without_secrets(
    env: dict[str, str], hub_run: subprocess.Popen[bytes], ops_stack: HubSettings
) -> None:
    workers = [w["pid"] for w in status(env)["workers"]]
    result = hub(env, "stack", "down")
    assert result.returncode == 0, result.stderr
    stopped = result.stdout.split("stopped: ", 1)[1]
    assert stopped.index(f"hub run (pid {hub_run.pid})") < stopped.index("postgres")
    assert await asyncio.to_thread(hub_run.wait, 10) == 0, "stopped cleanly, not killed"
    assert not [pid for pid in workers if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    lines = (ops_stack.state_dir / "hub-run.log").read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"] == "hub.ingest" for r in records)
    text = "\n".join(lines)
    for secret in ops_stack.secrets().values():
        assert secret not in text
