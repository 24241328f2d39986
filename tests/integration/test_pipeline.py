"""One message from a device to a row, on real servers: the spine every other test builds on."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from hub.settings import HubSettings
from tests.integration.support import Device, running_ingest, running_land, unique


async def wait_rows(url: str, sql: str, *args: object, want: int, timeout_s: float = 30.0) -> int:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            n = await conn.fetchval(sql, *args)
            if n >= want:
                return int(n)
            await asyncio.sleep(0.1)
        return int(n)
    finally:
        await conn.close()


async def test_a_device_message_becomes_a_row_with_converted_units(applied: HubSettings) -> None:
    device = unique("air")
    dev = Device(applied, "uni_air_lab")
    now_ms = int(time.time() * 1000)
    payload = {"t": now_ms, "pm2_5": 12.5, "pm10": 20.0, "temp_f": 212.0, "rh": 40.0}
    async with running_land(applied), running_ingest(applied):
        dev.publish(f"partners/uni_air_lab/stations/{device}/air", json.dumps(payload))
        acks = await dev.wait_acks(1)
        assert list(acks.values()) == ["Success"]
        url = applied.endpoints().database_url
        assert (
            await wait_rows(url, "SELECT count(*) FROM uni_air_lab.air_quality WHERE device_id = $1", device, want=1)
            == 1
        )
    dev.close()
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT * FROM uni_air_lab.air_quality WHERE device_id = $1", device)
    finally:
        await conn.close()
    assert row["pm25"] == 12.5
    assert abs(row["temperature_c"] - 100.0) < 1e-6  # 212 °F
    assert int(row["time"].timestamp() * 1000) == now_ms


async def test_maintain_deletes_rows_older_than_the_feeds_retention_on_plain_postgresql(applied: HubSettings) -> None:
    import subprocess
    import sys
    from datetime import UTC, datetime, timedelta

    from hub.stack.local import cli_env

    device = unique("old")
    url = applied.endpoints().database_url
    now = datetime.now(UTC)
    conn = await asyncpg.connect(url)
    try:
        # noise_levels keeps 90 days (connectors/uni_air_lab.yaml)
        for age in (timedelta(days=91), timedelta(days=89)):
            await conn.execute(
                """INSERT INTO uni_air_lab.noise_levels (device_id, time, laeq_db, lamax_db, interval_s)
                   VALUES ($1, $2, 50, 60, 60)""",
                device,
                now - age,
            )
    finally:
        await conn.close()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hub", "maintain"],
        env=cli_env(applied),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "uni_air_lab.noise_levels" in result.stdout
    conn = await asyncpg.connect(url)
    try:
        ages = await conn.fetch("SELECT now() - time AS age FROM uni_air_lab.noise_levels WHERE device_id = $1", device)
    finally:
        await conn.close()
    assert [r["age"].days for r in ages] == [89]
