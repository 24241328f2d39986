"""The broker's accounts kept equal to the catalog: compared at every `hub plan`, repaired at every `hub apply`.

Apply runs the broker's changes last inside its database transaction: if the broker refuses, nothing
is committed; if the commit fails after the broker changed, the next apply finds the difference
(a login of no partner in the catalog is removed, a partner applied again gets a password anew).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from hub.agreement import streams
from hub.agreement.world import load_world
from hub.catalog import logins as catalog_logins
from hub.control.plan import Change
from hub.mqtt_auth.accounts import desired_accounts, generate_secret, hash_password
from hub.mqtt_auth.dynsec import BrokerAuth
from hub.mqtt_auth.reconcile import AccountChange, Diff, diff_accounts
from hub.settings import HubSettings

PLAN_KINDS = {"login": "mqtt-login", "role": "mqtt-role", "group": "mqtt-group", "default-acl": "mqtt-access"}


async def broker_diff(
    settings: HubSettings,
    conn: asyncpg.Connection,
    broker: BrokerAuth,
    *,
    new_partners: Iterable[str] = (),
    issue: Iterable[str] = (),
    consumers: Iterable[str] | None = None,
) -> Diff:
    """What the broker lacks or has too much of, for the catalog's logins plus `new_partners`' own.

    `issue`: logins that get a new password whether or not the broker knows them. `consumers`: the
    organisations that read a share stream over MQTT (default: as the applied agreements say now).
    """
    logins = [(login.partner_id, login.username) for login in await catalog_logins.logins(conn)]
    known = {username for _p, username in logins}
    logins += [(p, p) for p in new_partners if p not in known]
    if consumers is None:
        consumers = streams.mqtt_consumers(streams.active(await load_world(conn), datetime.now(UTC)))
    want = desired_accounts(settings, logins, consumers)
    return diff_accounts(want, await broker.accounts(), issue=issue)


def plan_changes(diff: Diff) -> list[Change]:
    return [Change(PLAN_KINDS.get(c.kind, c.kind), c.action, c.target, c.detail) for c in diff.changes]


async def execute(
    conn: asyncpg.Connection, broker: BrokerAuth, changes: list[AccountChange], passwords: dict[str, str]
) -> dict[str, str]:
    """Run the changes on the broker; returns every password issued (user name -> password, shown once).

    A login that gets a password gets `passwords[username]` if given, else a new one; its hash goes
    into the catalog in the caller's transaction.
    """
    issued: dict[str, str] = {}
    commands: list[dict[str, Any]] = []
    for change in changes:
        if change.password_for is None:
            commands += change.commands
            continue
        user = change.password_for
        issued[user] = issued.get(user) or passwords.get(user) or generate_secret()
        commands += change.with_password(issued[user])
    for user, password in issued.items():
        await catalog_logins.set_password_hash(conn, user, hash_password(password))
    if commands:
        await broker.run(commands)
    return issued
