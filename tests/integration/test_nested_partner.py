"""Onboarding a partner whose devices send nested JSON, from its sample file, on a real stack of its own.

The partner's engineer drafts the config and schema with `hub connector init --sample`, gets one
guess wrong first (the time's unit) and applies it: its devices' messages are refused and kept as
dead letters. The local broker (memory only) restarts. With the draft as it was written, the
partner applies again, never renaming its schema's fields: valid messages land, invalid ones are
refused with reasons naming the field, and a replay lands what the wrong config refused, once.

The stack is this module's own, so that restarting its Kafka-protocol broker disturbs no other test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.ingest.worker import IngestWorker
from hub.landing import dead_letter_rows
from hub.landing.worker import LandingWorker
from hub.settings import HubSettings
from hub.stack.local import cli_env
from hub.stack.process import wait_for_port
from hub.stack.servers import kafka_process, start_kafka
from tests.integration.support import Device, api_token, eventually, private_stack, running
from tests.integration.test_registry_api import first_record

PARTNER, FEED = "nested_wx", "weather"
TABLE = f"{PARTNER}.{FEED}"


@pytest.fixture(scope="module")
def own_stack() -> Iterator[HubSettings]:
    with private_stack("hub-test-nested-") as settings:
        yield settings.replace(catalog_reload_s=0.5)


def hub(settings: HubSettings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "hub", *args], cwd=cwd, env=cli_env(settings), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"hub {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def message(station: str, ms: int, fahrenheit: Any = 68.0, **extra: Any) -> dict[str, Any]:
    return {"station": {"id": station, "network": "north"},
            "obs": {"time": ms, "temp": {"f": fahrenheit}, "rh": 55}, **extra}  # fmt: skip


def publish(settings: HubSettings, payloads: list[dict[str, Any]]) -> None:
    device = Device(settings, PARTNER)
    try:
        for p in payloads:
            device.publish(f"partners/{PARTNER}/{FEED}", json.dumps(p))
        assert eventually_sync(lambda: len(device.acks) >= len(payloads))
    finally:
        device.close()


def eventually_sync(condition: Any, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


async def fetch(settings: HubSettings, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def rows(settings: HubSettings) -> list[Any]:
    return await fetch(settings, f"SELECT device_id, time, obs_temp_c FROM {TABLE} ORDER BY device_id")


async def dead(settings: HubSettings) -> list[Any]:
    return await fetch(
        settings, "SELECT id, reason, message, replayed_at FROM hub.dead_letters WHERE partner_id = $1 ORDER BY id",
        PARTNER,
    )  # fmt: skip


async def config_applied(worker: IngestWorker, fmt: str) -> bool:
    return any(f.key == (PARTNER, FEED) and f.feed.time.format == fmt for f in worker.feeds)


async def test_a_nested_json_partner_onboards_from_its_sample_and_a_replay_lands_what_a_wrong_config_refused(
    own_stack: HubSettings, tmp_path: Path
) -> None:
    settings = own_stack
    creds = str(settings.state_dir / "credentials")
    now = int(time.time() * 1000)
    started = time.monotonic()

    # The partner's sample: nested objects, the id, epoch-ms time and a Fahrenheit temperature inside them.
    sample = tmp_path / "weather.jsonl"
    sample.write_text("\n".join(json.dumps(message(f"st-{i}", now - i * 60_000, 60.0 + i)) for i in range(1, 7)))
    report = hub(settings, tmp_path, "connector", "init", "--sample", str(sample), "--partner", PARTNER, "--feed", FEED)
    assert "epoch milliseconds in 6 of 6 samples" in report.stdout
    config = tmp_path / "connectors" / f"{PARTNER}.yaml"
    drafted = config.read_text()
    schema_names = [f["name"] for f in json.loads((tmp_path / "schemas" / f"{FEED}.avsc").read_text())["fields"]]
    assert schema_names[:2] == ["station_id", "obs_time"]  # the partner's own names, never edited below

    # A wrong guess first: the time read as seconds. Its devices' messages are refused and kept.
    config.write_text(drafted.replace("format: epoch_ms", "format: epoch_s"))
    hub(settings, tmp_path, "plan", str(config))
    hub(settings, tmp_path, "apply", str(config), "--save-credentials", creds)
    early = [message(f"early-{i}", now - 1000 * i) for i in range(3)]
    async with (
        running(IngestWorker(settings, settings.endpoints())),
        running(LandingWorker(settings, settings.endpoints())),
    ):
        publish(settings, early)
        assert await eventually(lambda: _count(dead(settings), 3), timeout_s=30)
    refused = await dead(settings)
    assert {r["reason"] for r in refused} == {"time_out_of_range"}
    assert "'obs_time' (from 'obs.time')" in refused[0]["message"]

    # The local broker keeps its log in memory: a restart loses it, not the dead letters.
    port = int(settings.endpoints().kafka_bootstrap.rsplit(":", 1)[1])
    kafka_process(settings.state_dir).stop()
    wait_for_port(port, 15.0, start_kafka(settings.state_dir, port))
    assert len(await dead(settings)) == 3

    # The draft as written: plan shows the mapping, apply changes the time format, and nothing else.
    config.write_text(drafted)
    planned = hub(settings, tmp_path, "plan", str(config))
    assert "changed: time" in planned.stdout
    assert "obs.temp.f * 0.555556 - 17.7778" in planned.stdout and "-> obs_temp_c" in planned.stdout
    assert "station.id" in planned.stdout and "-> device_id (the schema's station_id)" in planned.stdout
    hub(settings, tmp_path, "apply", str(config))
    tried = hub(settings, tmp_path, "try", f"{PARTNER}.{FEED}", "--payload", str(sample))
    assert tried.stdout.count("accepted") == 6

    valid = [message(f"ok-{i}", now - 1000 * i, 212.0) for i in range(4)]
    invalid = [message("bad-temp", now, "hot"), {"obs": {"time": now, "temp": {"f": 50}}}]
    async with (
        running(IngestWorker(settings, settings.endpoints())) as ingest,
        running(LandingWorker(settings, settings.endpoints())),
    ):
        assert await eventually(lambda: config_applied(ingest, "epoch_ms"))
        publish(settings, valid + invalid)
        assert await eventually(lambda: _count(rows(settings), 4), timeout_s=30)
        landed_new = time.monotonic() - started
        assert await eventually(lambda: _count(dead(settings), 5), timeout_s=30)
        reasons = {r["reason"]: r["message"] for r in (await dead(settings))[3:]}
        assert "'obs_temp_c' (from 'obs.temp.f')" in reasons["wrong_type"]
        assert reasons["missing_field"] == "field 'station_id' is missing: expected it in payload field 'station.id'"

        replayed = hub(settings, tmp_path, "dead-letters", "replay", "--feed", f"{PARTNER}.{FEED}")
        assert "3 sent" in replayed.stdout and "2 still refused" in replayed.stdout
        assert await eventually(lambda: _count(rows(settings), 7), timeout_s=30)
        again = hub(settings, tmp_path, "dead-letters", "replay", "--feed", f"{PARTNER}.{FEED}")
        assert "0 sent" in again.stdout
        await ingest.step()  # a moment for anything a second replay might have sent
    # A Kafka consumer decodes the hub's records through the registry, with the hub's names for the key fields.
    record = await asyncio.to_thread(first_record, settings.endpoints().kafka_bootstrap, f"hub.{TABLE}", b"ok-0")
    user_info = f"{PARTNER}:{api_token(settings, PARTNER)}"  # the registry's routes need the partner's API token
    registry = SchemaRegistryClient(
        {
            "url": settings.endpoints().registry_url,
            "basic.auth.user.info": user_info,
        }
    )
    decoded = AvroDeserializer(registry)(record.value(), SerializationContext(f"hub.{TABLE}", MessageField.VALUE))
    assert decoded["device_id"] == "ok-0" and decoded["obs_temp_c"] == pytest.approx(100.0)
    landed = await rows(settings)
    assert sorted(r["device_id"] for r in landed) == sorted(m["station"]["id"] for m in early + valid)
    assert all(r["obs_temp_c"] == pytest.approx(100.0) for r in landed if r["device_id"].startswith("ok-"))
    listed = json.loads(hub(settings, tmp_path, "dead-letters", "--partner", PARTNER, "--json").stdout)
    assert sorted(d["reason"] for d in listed) == ["missing_field", "wrong_type"]  # the replayed ones are rows now
    assert json.loads(listed[0]["payload"]) in invalid
    print(
        f"\nnested partner: sample to its first rows in {landed_new:.1f} s (with a wrong config and a broker restart)"
    )


async def _count(query: Any, want: int) -> bool:
    return len(await query) >= want


async def test_dead_letters_are_kept_for_the_retention_and_at_most_the_configured_number(
    own_stack: HubSettings,
) -> None:
    conn = await asyncpg.connect(own_stack.endpoints().database_url)
    try:
        await conn.execute("DELETE FROM hub.dead_letters")  # this module's own stack: the test before is done
        now = datetime.now(UTC)
        rows = [
            (now - timedelta(days=30 + i), "prune_test", "f", "missing_field", "m", "ingest", "t", b"x")
            for i in range(5)
        ]
        rows += [
            (now - timedelta(minutes=i), "prune_test", "f", "wrong_type", "m", "ingest", "t", b"y") for i in range(5)
        ]
        async with conn.transaction():
            await dead_letter_rows.store(conn, rows)
        removed = await dead_letter_rows.prune(conn, timedelta(days=14), 3)
        left = await conn.fetch("SELECT reason, at FROM hub.dead_letters WHERE partner_id = 'prune_test' ORDER BY at")
    finally:
        await conn.close()
    assert removed == 7
    assert [r["reason"] for r in left] == ["wrong_type"] * 3  # the newest three
