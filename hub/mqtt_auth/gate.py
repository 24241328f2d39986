"""The restart gate's logins: who is kept out of a restarted broker until the hub's ingest workers are back.

Mosquitto 2.0.11 restores persistent sessions from its persistence file after a crash, but not their
shared subscriptions (the ingest workers' `$share/hub-ingest/...`). A device that publishes to the
restarted broker before the workers have subscribed again gets its PUBACK, and the message goes to
no one. So, before the local stack's supervisor starts a broker that died, every login that is not
one of the hub's own is marked `disabled` in the dynamic security plugin's file: such a device's
CONNECT is refused (not authorised), it keeps its messages and tries again, and the broker
acknowledges nothing that nobody would receive. Once the ingest workers have subscribed again the
supervisor enables exactly the logins it disabled, through the plugin's API.

Pure: hub/stack/broker_gate.py reads and writes the files and talks to the broker.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from hub.errors import BrokerAccountsError
from hub.mqtt_auth.accounts import RESERVED_PREFIX


def is_hub_login(username: str) -> bool:
    """One of the hub's own logins (admin, health probe, workers): never gated. Partner ids cannot contain '-',
    so a partner's login or device login (`<partner>`, `<partner>.<device>`) never starts with `hub-`."""
    return username.startswith(RESERVED_PREFIX)


def _clients(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    clients = document.get("clients", [])
    if not isinstance(clients, list) or not all(
        isinstance(c, dict) and isinstance(c.get("username"), str) for c in clients
    ):
        raise BrokerAccountsError(
            "the broker's accounts file has no valid `clients` list (each an object with a `username`)"
        )
    return clients


def logins_to_close(document: Mapping[str, Any]) -> list[str]:
    """The logins of the plugin's file (its parsed JSON) that the gate disables: every enabled login that is
    not the hub's own. A login disabled already (by an operator) is not listed, so it stays disabled."""
    return sorted(
        c["username"] for c in _clients(document) if not is_hub_login(c["username"]) and not c.get("disabled", False)
    )


def closed_document(document: Mapping[str, Any], usernames: Iterable[str]) -> dict[str, Any]:
    """A copy of the plugin's file with `usernames` disabled; everything else as it was."""
    closing = set(usernames)
    out = copy.deepcopy(dict(document))
    for client in _clients(out):
        if client["username"] in closing:
            client["disabled"] = True
    return out


def enable_commands(usernames: Iterable[str]) -> list[dict[str, Any]]:
    """The plugin's commands that open the gate again: exactly the logins it closed."""
    return [{"command": "enableClient", "username": name} for name in sorted(set(usernames))]
