"""A partner's MQTT logins: one per device or gateway (`hub devices`), and new passwords for all of them
(`hub partners rotate-credentials`). Each login's user name is the only client id it may connect with.

Like apply, each operation holds the apply lock, changes the catalog and then the broker in one
transaction (a broker that refuses leaves the catalog unchanged), and touches only the partner's
own logins, role and group on the broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from hub.catalog import logins as catalog_logins
from hub.catalog import store as catalog
from hub.catalog.locks import APPLY_LOCK
from hub.catalog.logins import Login
from hub.control import broker_sync
from hub.db import connection
from hub.errors import ConfigError, NotFound
from hub.identifiers import device_login
from hub.mqtt_auth.accounts import generate_secret, hash_password, partner_role_name
from hub.mqtt_auth.dynsec import BrokerAuth, DynsecBroker
from hub.settings import HubSettings


@asynccontextmanager
async def _locked(settings: HubSettings, partner_id: str) -> AsyncIterator[asyncpg.Connection]:
    async with connection(settings.endpoints().database_url) as conn:
        await catalog.ensure_catalog(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
            if not await conn.fetchval("SELECT 1 FROM hub.partners WHERE id = $1", partner_id):
                raise NotFound(f"no partner {partner_id!r} in the catalog; see `hub partners`")
            yield conn


async def _sync(
    settings: HubSettings,
    conn: asyncpg.Connection,
    broker: BrokerAuth,
    partner_id: str,
    usernames: set[str],
    passwords: dict[str, str],
) -> dict[str, str]:
    """Bring these logins (and the partner's role and group) on the broker in line with the catalog."""
    issue = set(passwords)
    diff = await broker_sync.broker_diff(settings, conn, broker, issue=issue)
    mine = usernames | {partner_role_name(partner_id)}
    changes = [c for c in diff.changes if c.target in mine]
    return await broker_sync.execute(conn, broker, changes, passwords)


async def add_devices(
    settings: HubSettings, partner_id: str, names: list[str], *, broker: BrokerAuth | None = None
) -> dict[str, str]:
    """New device logins (user name -> password, shown once)."""
    broker = broker or DynsecBroker.from_settings(settings)
    usernames = {name: device_login(partner_id, name) for name in names}
    if len(set(usernames.values())) != len(names):
        raise ConfigError(f"device names repeat: {', '.join(names)}")
    async with _locked(settings, partner_id) as conn:
        taken = {login.username for login in await catalog_logins.logins(conn, partner_id)}
        clash = sorted(u for u in usernames.values() if u in taken)
        if clash:
            raise ConfigError(f"{', '.join(clash)} exist already: rotate their passwords or remove them first")
        passwords = {}
        for name, username in usernames.items():
            passwords[username] = generate_secret()
            await catalog_logins.add_device(conn, partner_id, name, username, hash_password(passwords[username]))
        return await _sync(settings, conn, broker, partner_id, set(usernames.values()), passwords)


async def remove_devices(
    settings: HubSettings, partner_id: str, names: list[str], *, broker: BrokerAuth | None = None
) -> list[str]:
    """Remove device logins from the catalog and the broker (their connections are closed); returns them."""
    broker = broker or DynsecBroker.from_settings(settings)
    async with _locked(settings, partner_id) as conn:
        removed = []
        for name in names:
            username = await catalog_logins.remove_device(conn, partner_id, name)
            if username is None:
                raise NotFound(
                    f"partner {partner_id} has no device login {name!r}; see `hub devices list {partner_id}`"
                )
            removed.append(username)
        # Deleted by name, whatever the broker holds for them (a drifted login may have lost its group).
        await broker.run([{"command": "deleteClient", "username": u} for u in removed], ok_errors=("Client not found",))
        return removed


async def rotate(settings: HubSettings, partner_id: str, *, broker: BrokerAuth | None = None) -> dict[str, str]:
    """New passwords for every login of the partner; the old ones stop working at once."""
    broker = broker or DynsecBroker.from_settings(settings)
    async with _locked(settings, partner_id) as conn:
        usernames = {login.username for login in await catalog_logins.logins(conn, partner_id)}
        passwords = {u: generate_secret() for u in usernames}
        return await _sync(settings, conn, broker, partner_id, usernames, passwords)


async def list_logins(settings: HubSettings, partner_id: str) -> list[Login]:
    async with _locked(settings, partner_id) as conn:
        return await catalog_logins.logins(conn, partner_id)
