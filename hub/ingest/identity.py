"""The ingest workers' MQTT identities: client ids unique across hosts and processes, each with its own login.

A worker's client id is `hub-ingest-<host>-<index>`: the host tells machines (and containers,
whose host name is their id) apart, the index the workers of one machine. Two processes on one
machine never hold one index at once: each index is claimed with a lock file under the state
directory (`claim`), by the supervisor for its slots and by the worker for the client id it
connects with. Each id has a login of its own, bound to that id, with a password made anew at
every start (hub/mqtt_auth/dynsec.py `provision_login`), so no one else can take the session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hub import worker_registry
from hub.errors import HubError
from hub.mqtt_auth.accounts import ROLE_BROKER_LOG, ROLE_INGEST, generate_secret
from hub.mqtt_auth.dynsec import DynsecBroker, provision_login
from hub.settings import Endpoints, HubSettings, MqttAddress

log = logging.getLogger("hub.ingest")

PREFIX = "hub-ingest-"
WATCH_PREFIX = "hub-watch-"


host_label = worker_registry.host_label


def ingest_client_id(host: str, index: int) -> str:
    """An ingest worker's client id (also its MQTT user name): hub/worker_registry.py `worker_id`."""
    return worker_registry.worker_id("ingest", host, index)


def watch_client_id(host: str, index: int) -> str:
    """The worker's second connection, to the broker's log (who took over a session)."""
    return f"{WATCH_PREFIX}{host_label(host)}-{index}"


def this_host(settings: HubSettings) -> str:
    return worker_registry.this_host(settings.worker_host)


def worker_client_id(settings: HubSettings, index: int) -> str:
    return ingest_client_id(this_host(settings), index)


def index_on_host(client_id: str, host: str) -> int | None:
    """The index of a client id made on `host` by `ingest_client_id` (None for another host's)."""
    head = f"{PREFIX}{host_label(host)}-"
    rest = client_id[len(head) :]
    return int(rest) if client_id.startswith(head) and rest.isdigit() else None


def run_dir(settings: HubSettings) -> Path:
    return worker_registry.run_dir(settings.state_dir)


@contextmanager
def claim(settings: HubSettings, name: str) -> Iterator[None]:
    """Hold `name` for this process (hub/worker_registry.py `claim`); raises HubError at once if another holds it."""
    with worker_registry.claim(settings.state_dir, name):
        yield


def free(settings: HubSettings, name: str) -> bool:
    """Whether no process holds `name` right now."""
    return worker_registry.free(settings.state_dir, name)


def tls_ca(settings: HubSettings) -> str | None:
    return str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None


async def provision_logins(
    settings: HubSettings, endpoints: Endpoints, client_id: str, index: int, drain_only: bool
) -> tuple[MqttAddress, MqttAddress | None]:
    """A worker's logins, bound to its client ids, with passwords made now (the old ones stop working).

    The second is for watching the broker's log for takeovers (none when only draining a session).
    Both are made through the hub's admin login, the credentials of HUB_MQTT_URL.
    """
    admin = endpoints.mqtt()
    broker = DynsecBroker(admin, tls_ca(settings))
    own = generate_secret()
    await provision_login(broker, client_id, ROLE_INGEST, own)
    if drain_only:
        return admin.with_credentials(client_id, own), None
    watch, watching = watch_client_id(this_host(settings), index), generate_secret()
    await provision_login(broker, watch, ROLE_BROKER_LOG, watching)
    return admin.with_credentials(client_id, own), admin.with_credentials(watch, watching)


async def remove_logins(settings: HubSettings, endpoints: Endpoints, client_id: str, watch: str | None) -> None:
    """Remove a worker's logins once its session has ended."""
    names = [client_id, *([watch] if watch else [])]
    try:
        await DynsecBroker(endpoints.mqtt(), tls_ca(settings)).run(
            [{"command": "deleteClient", "username": n} for n in names], ok_errors=("Client not found",)
        )
    except HubError as exc:  # the session is ended already: a login left behind is only untidy
        log.warning("could not remove the logins %s from the broker: %s", names, exc)
