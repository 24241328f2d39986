"""A partner of the tests' own with organisations and agreements on the session stack, and rows it controls."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from hub.control.apply import ApplyResult, apply
from hub.control.db_credentials import org_url
from hub.settings import HubSettings
from hub.stack.broker_auth import LocalBrokerAuth

REPO = Path(__file__).resolve().parents[2]
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


@dataclass
class Workspace:
    """connectors/, schemas/, organisations/ and agreements/ of the tests' own partner, in a temp dir."""

    root: Path
    settings: HubSettings
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def partner(self) -> str:
        return f"lab_{self.tag}"

    def org(self, name: str) -> str:
        return f"{name}_{self.tag}"

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{tag}", self.tag).replace("{partner}", self.partner))
        return path

    def setup(self, orgs: list[str]) -> None:
        (self.root / "schemas").mkdir(parents=True, exist_ok=True)
        for schema in ("air_quality", "noise_level", "parking_occupancy"):
            shutil.copy(REPO / "schemas" / f"{schema}.avsc", self.root / "schemas" / f"{schema}.avsc")
        self.write(
            "connectors/lab.yaml",
            """partner: {id: {partner}, name: Test Lab, kind: university, contact: lab@test.example}
feeds:
  - {name: air, description: Air, licence: ODbL-1.0, schema: air_quality, topic: "air/{device_id}", format: json}
  - {name: noise, description: Noise, licence: CC0-1.0, schema: noise_level, topic: "noise/{device_id}", format: avro}
""",
        )
        self.write(
            "connectors/town.yaml",
            """partner: {id: town_{tag}, name: Test Town, kind: city, contact: town@test.example}
feeds:
  - name: parking
    description: Parking
    licence: OGL-UK-3.0
    schema: parking_occupancy
    topic: "parking/{device_id}"
    format: csv
    csv: {columns: [time, occupied, capacity, status]}
""",
        )
        for name in orgs:
            self.write(
                f"organisations/{name}.yaml",
                f"organisation: {{id: {self.org(name)}, name: Org {name}, kind: city, contact: {name}@test.example}}\n",
            )

    async def apply(self, *paths: str) -> ApplyResult:
        chosen = [self.root / p for p in paths] or [
            self.root / d for d in ("connectors", "organisations", "agreements")
        ]
        result = await apply(self.settings, chosen, broker=LocalBrokerAuth(self.settings), actor="test-suite")
        self.passwords.update(result.db_passwords)
        return result

    def url(self, name: str) -> str:
        org = self.org(name)
        return org_url(self.settings.endpoints().database_url, org, self.passwords[org])

    async def connect(self, name: str, **kwargs: Any) -> asyncpg.Connection:
        """A session as organisation `name`, logged in with its own password (never the hub's)."""
        return await asyncpg.connect(self.url(name), **kwargs)


def bucket_of(t: datetime, size: timedelta) -> datetime:
    return t - (t - ORIGIN) % size


def air_rows(partner: str, now: datetime) -> list[tuple[Any, ...]]:
    """Four hours of readings every 5 minutes. st-004 stops two hours ago; st-001 has no NO2 on odd rows; the ids
    `st_01` and `stX01` tell an escaped pattern from a naive one; `secret-9` is granted to nobody."""
    start = bucket_of(now, timedelta(minutes=5)) - timedelta(hours=4)
    rows = []
    for i in range(48):
        t = start + i * timedelta(minutes=5)
        for n, device in enumerate(("st-001", "st-002", "st-003", "st-004", "st_01", "stX01", "secret-9")):
            if device == "st-004" and t > now - timedelta(hours=2):
                continue
            no2 = None if device == "st-001" and i % 2 else 20.0 + n + i % 7
            rows.append((device, t, 10.0 + n + i % 5, 20.0 + n, no2, 15.0, 60.0, 3.7, t))
    return rows


async def seed(conn: asyncpg.Connection, partner: str, now: datetime) -> list[tuple[Any, ...]]:
    rows = air_rows(partner, now)
    await conn.executemany(
        f'INSERT INTO "{partner}".air (device_id, time, pm25, pm10, no2, temperature_c, humidity_pct, battery_v,'
        " received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        rows,
    )
    start = bucket_of(now, timedelta(minutes=5)) - timedelta(hours=4)
    noise = [(f"n-{d}", start + i * timedelta(minutes=5), 50.0 + d, 70.0 + d, 60) for i in range(48) for d in range(4)]
    await conn.executemany(
        f'INSERT INTO "{partner}".noise (device_id, time, laeq_db, lamax_db, interval_s) VALUES ($1, $2, $3, $4, $5)',
        noise,
    )
    devices = [(partner, "air", r) for r in sorted({r[0] for r in rows})] + [
        (partner, "noise", f"n-{d}") for d in range(4)
    ]
    await conn.executemany(
        "INSERT INTO hub.devices (partner_id, feed, device_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", devices
    )
    return rows
