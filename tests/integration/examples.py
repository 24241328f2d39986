"""The example partners, organisations and agreements applied with rows in every example feed: shared by the tests
of sharing and of dashboards (the session fixture `examples` in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from hub.control import db_credentials
from hub.control.credentials import default_dir
from hub.settings import HubSettings
from hub.stack.local import cli_env

REPO = Path(__file__).resolve().parents[2]
HUB = [sys.executable, "-m", "hub"]
SOURCES = [str(REPO / d) for d in ("connectors", "organisations", "agreements")]
# Devices of the example feeds, named as `hub simulate` names them (the agreements list some of them).
DEVICES = {
    ("uni_air_lab", "air_quality"): ["air-0010", "air-0021", "air-0050"],
    ("uni_air_lab", "noise_levels"): ["noi-0001", "noi-0002", "noi-0003"],
    ("city_transport", "parking_occupancy"): ["par-0001", "par-0002", "par-0003", "par-0004"],
    ("city_transport", "traffic_counts"): ["tra-0001", "tra-0002"],
    ("voltcharge", "charger_status"): ["cha-0001", "cha-0002", "cha-0003", "cha-0009"],
}
VALUES = {
    "air_quality": "(device_id, time, pm25, pm10, no2, temperature_c, humidity_pct) VALUES ($1, $2, 9, 9, 3, 4, 7)",
    "noise_levels": "(device_id, time, laeq_db, lamax_db, interval_s) VALUES ($1, $2, 55, 71, 60)",
    "parking_occupancy": "(device_id, time, occupied, capacity, status) VALUES ($1, $2, 120, 400, 'OPEN')",
    "traffic_counts": "(device_id, time, lane, vehicles, heavy_vehicles, interval_s) VALUES ($1, $2, 1, 14, 2, 60)",
    "charger_status": "(device_id, time, connector, status, power_kw) VALUES ($1, $2, 1, 'CHARGING', 22)",
}


def hub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


async def seed(settings: HubSettings) -> None:
    """Four hours of readings, every ten minutes, older than every delay of the examples."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
        for (partner, feed), devices in DEVICES.items():
            rows = [(d, start + i * timedelta(minutes=10)) for d in devices for i in range(18)]
            await conn.executemany(
                f"INSERT INTO {partner}.{feed} {VALUES[feed]} ON CONFLICT DO NOTHING", rows
            )  # fmt: skip
            await conn.executemany(
                "INSERT INTO hub.devices (partner_id, feed, device_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [(partner, feed, d) for d in devices],
            )
    finally:
        await conn.close()


def apply_with_agreements(applied: HubSettings) -> tuple[HubSettings, subprocess.CompletedProcess[str]]:
    """Seed the example feeds, then `hub apply` connectors, organisations and agreements as a user does, every
    organisation's database login saved where `hub db-url` finds it."""
    asyncio.run(seed(applied))
    env = cli_env(applied)
    result = hub(env, "apply", *SOURCES, "--save-credentials", str(default_dir(applied)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for partner in ("uni_air_lab", "city_transport", "voltcharge"):  # their logins were made before this module
        if db_credentials.load(default_dir(applied), partner) is None:
            password = asyncio.run(db_credentials.new_password(applied, partner))
            db_credentials.save(default_dir(applied), db_credentials.describe(applied, partner, password))
    return applied, result
