"""Partners' MQTT logins as the catalog records them: each partner's own, and one per device (`hub.mqtt_devices`).

Only a hash of each password is kept; the broker holds its own. A login's user name is also the
only client id the broker lets it connect with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from hub.mqtt_auth.accounts import CONSUMER_PREFIX


@dataclass(frozen=True)
class Login:
    partner_id: str
    username: str
    device: str | None  # None: the partner's own login
    created_at: datetime
    rotated_at: datetime


async def logins(conn: asyncpg.Connection, partner_id: str | None = None) -> list[Login]:
    rows = await conn.fetch(
        """SELECT id AS partner_id, mqtt_username AS username, NULL AS device, created_at, updated_at AS rotated_at
           FROM hub.partners WHERE $1::text IS NULL OR id = $1
           UNION ALL
           SELECT partner_id, username, name, created_at, rotated_at
           FROM hub.mqtt_devices WHERE $1::text IS NULL OR partner_id = $1
           ORDER BY partner_id, device NULLS FIRST""",
        partner_id,
    )
    return [Login(r["partner_id"], r["username"], r["device"], r["created_at"], r["rotated_at"]) for r in rows]


async def set_password_hash(conn: asyncpg.Connection, username: str, password_hash: str) -> None:
    """Record a login's new password (its hash); a partner's or device's login must exist in the catalog, an
    organisation's share-stream login (consumer-<id>) is recorded with it."""
    if username.startswith(CONSUMER_PREFIX):
        await conn.execute(
            """INSERT INTO hub.share_logins (org_id, username, password_hash) VALUES ($1, $2, $3)
               ON CONFLICT (org_id) DO UPDATE SET username = $2, password_hash = $3, rotated_at = now()""",
            username.removeprefix(CONSUMER_PREFIX),
            username,
            password_hash,
        )
        return
    done = await conn.execute(
        "UPDATE hub.mqtt_devices SET password_hash = $2, rotated_at = now() WHERE username = $1",
        username,
        password_hash,
    )
    if done == "UPDATE 0":
        await conn.execute(
            "UPDATE hub.partners SET mqtt_password_hash = $2, updated_at = now() WHERE mqtt_username = $1",
            username,
            password_hash,
        )


async def add_device(conn: asyncpg.Connection, partner_id: str, name: str, username: str, password_hash: str) -> None:
    await conn.execute(
        "INSERT INTO hub.mqtt_devices (partner_id, name, username, password_hash) VALUES ($1, $2, $3, $4)",
        partner_id,
        name,
        username,
        password_hash,
    )


async def remove_device(conn: asyncpg.Connection, partner_id: str, name: str) -> str | None:
    """Remove a device login; returns its user name (None if there was none)."""
    username: str | None = await conn.fetchval(
        "DELETE FROM hub.mqtt_devices WHERE partner_id = $1 AND name = $2 RETURNING username", partner_id, name
    )
    return username
