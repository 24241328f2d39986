"""The share workers' MQTT identity, and ending a consumer's MQTT session when its stream stops.

Each worker process gets a login of its own, bound to its worker id (`hub-share-<host>-<index>`,
hub/worker_registry.py, the id `hub stack status` lists), in the group `hub-share` (publish under
`share/#`, nothing else), with a password made at its start; it is removed when the worker stops. A
worker killed before it could remove its login leaves it to the next worker of its index, whose new
password ends whatever still used it. Both through the hub's admin
login (HUB_MQTT_URL), as the ingest workers' logins are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hub import worker_registry
from hub.errors import HubError
from hub.mqtt_auth.accounts import ROLE_SHARE, SHARE_ROOT, acl_json, consumer_name, generate_secret
from hub.mqtt_auth.accounts import Acl as MqttAcl
from hub.mqtt_auth.dynsec import DynsecBroker, provision_login
from hub.settings import Endpoints, HubSettings, MqttAddress

log = logging.getLogger("hub.share")


@dataclass(frozen=True)
class Identity:
    client_id: str
    address: MqttAddress


def tls_ca(settings: HubSettings) -> str | None:
    return str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None


def _broker(settings: HubSettings, endpoints: Endpoints) -> DynsecBroker:
    return DynsecBroker(endpoints.mqtt(), tls_ca(settings))


async def provision(settings: HubSettings, endpoints: Endpoints, index: int = 0) -> Identity:
    broker = _broker(settings, endpoints)
    # A broker set up before share streams existed lacks the role and group until the next `hub apply`.
    await broker.run(
        [
            {
                "command": "createRole",
                "rolename": ROLE_SHARE,
                "acls": [acl_json(MqttAcl("publishClientSend", f"{SHARE_ROOT}/#"))],
            },
            {"command": "createGroup", "groupname": ROLE_SHARE},
            {"command": "addGroupRole", "groupname": ROLE_SHARE, "rolename": ROLE_SHARE},
        ],
        ok_errors=("Role already exists", "Group already exists", "Group is already in this role"),
    )
    client_id = worker_registry.worker_id("share", worker_registry.this_host(settings.worker_host), index)
    password = generate_secret()
    await provision_login(broker, client_id, ROLE_SHARE, password)
    return Identity(client_id, endpoints.mqtt().with_credentials(client_id, password))


async def remove(settings: HubSettings, endpoints: Endpoints, identity: Identity) -> None:
    try:
        await _broker(settings, endpoints).run(
            [{"command": "deleteClient", "username": identity.client_id}], ok_errors=("Client not found",)
        )
    except HubError as exc:
        log.warning("could not remove the login %s from the broker: %s", identity.client_id, exc)


async def disconnect_consumer(settings: HubSettings, endpoints: Endpoints, org: str) -> None:
    """End the MQTT session of `org`'s share login (disabling a login disconnects it; it is enabled again)."""
    name = consumer_name(org)
    try:
        await _broker(settings, endpoints).run(
            [{"command": "disableClient", "username": name}, {"command": "enableClient", "username": name}],
            ok_errors=("Client not found",),
        )
    except HubError as exc:
        log.warning("could not end the MQTT session of %s: %s", name, exc)
