"""The MQTT broker's accounts as the hub wants them: who may log in, with which client id, and what each may do.

Mosquitto's dynamic security plugin enforces them (docs/operations.md, "Partner isolation on the
broker"). Every readable topic is granted as a `subscribePattern` + `publishClientReceive` pair,
so a SUBSCRIBE outside it (the hub's own shared group included) is refused at once (reason 135),
never granted and then starved at delivery. Every login is bound to one client id, so nobody can
take over another's session. Pure: no I/O here (hub/mqtt_auth/dynsec.py talks to the broker).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hub.settings import HubSettings

ADMIN_USER = "hub-admin"  # the hub's control plane: the dynamic security API, nothing else
HEALTH_USER = "hub-health"  # health probes: may connect, nothing more
RESERVED_PREFIX = "hub-"  # the hub's own logins; partner ids cannot contain '-'
SHARE_GROUP = "hub-ingest"  # the ingest workers' shared subscription group

ROLE_ADMIN = "hub-admin"
ROLE_INGEST = "hub-ingest"
ROLE_BROKER_LOG = "hub-broker-log"  # reads the broker's own log lines (who took over a session)
ROLE_REPORTS = "hub-reports"  # publishes error reports to partners (landing: duplicate_key)
ROLE_SHARE = "hub-share"  # the share workers: publish the live share streams (hub/share/)
SHARE_ROOT = "share"  # hub/agreement/names.py SHARE_MQTT_ROOT
OPEN_DATA = "open_data"  # the consumer part of open-data streams' topics
CONSUMER_PREFIX = "consumer-"  # an organisation reading share streams over MQTT: role, group and login consumer-<id>
PARTNER_PREFIX = "partner-"  # a partner's role and group: partner-<id>
# The roles of the hub's own logins, each given through a group of the same name (`hub_groups`).
HUB_WORKER_ROLES = (ROLE_INGEST, ROLE_BROKER_LOG, ROLE_REPORTS, ROLE_SHARE)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
BROKER_LOG_TOPICS = ("$SYS/broker/log/E", "$SYS/broker/log/N")

ITERATIONS = 101  # mosquitto_passwd's and the plugin's own default
SALT_BYTES = 12  # the plugin skips a client whose salt is not exactly 12 bytes
DEFAULT_ACL_TYPES = ("publishClientSend", "publishClientReceive", "subscribe", "unsubscribe")


def generate_secret() -> str:
    return secrets.token_urlsafe(24)


def _digest(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto's `$7$` format (PBKDF2-SHA512): what the catalog keeps of a password."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = _digest(password, salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, _digest_b64 = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    expected = hash_password(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return hmac.compare_digest(expected, hashed)


def dynsec_password(password: str) -> dict[str, Any]:
    """The fields the plugin stores for a password, for its file written before the broker starts."""
    salt = secrets.token_bytes(SALT_BYTES)
    return {
        "password": base64.b64encode(_digest(password, salt, ITERATIONS)).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


@dataclass(frozen=True, order=True)
class Acl:
    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def render(self) -> str:
        return f"{self.acltype} {self.topic}" + ("" if self.allow else " (deny)")


@dataclass(frozen=True)
class Role:
    name: str
    acls: frozenset[Acl]


@dataclass(frozen=True)
class Group:
    name: str
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Client:
    username: str
    clientid: str | None
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    disabled: bool = False


@dataclass
class Accounts:
    """A broker's accounts: desired (from the catalog) or as the broker reports them."""

    default_acl: dict[str, bool] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)


def _read(topic: str) -> list[Acl]:
    """May subscribe to `topic` (a pattern) and receive what matches it, and unsubscribe again.

    Without the unsubscribe ACL an MQTT 3.1.1 client gets its UNSUBACK and stays subscribed.
    """
    return [Acl("subscribePattern", topic), Acl("publishClientReceive", topic), Acl("unsubscribePattern", topic)]


def partner_role_name(partner_id: str) -> str:
    return f"{PARTNER_PREFIX}{partner_id}"


def hub_roles(settings: HubSettings) -> list[Role]:
    """The hub's own roles. Fixed: changing a role's ACLs disconnects every client that holds it."""
    ns, errors = settings.mqtt_namespace_root, settings.mqtt_error_root
    return [
        Role(
            ROLE_ADMIN,
            frozenset(
                [
                    Acl("publishClientSend", CONTROL_TOPIC),
                    Acl("subscribeLiteral", CONTROL_RESPONSE_TOPIC),
                    Acl("publishClientReceive", CONTROL_RESPONSE_TOPIC),
                    Acl("unsubscribeLiteral", CONTROL_RESPONSE_TOPIC),
                ]
            ),
        ),
        Role(
            ROLE_INGEST,
            frozenset(
                [
                    Acl("subscribePattern", f"$share/{SHARE_GROUP}/{ns}/#"),
                    Acl("unsubscribePattern", f"$share/{SHARE_GROUP}/{ns}/#"),
                    Acl("publishClientReceive", f"{ns}/#"),
                    Acl("publishClientSend", f"{errors}/#"),
                ]
            ),
        ),
        Role(ROLE_BROKER_LOG, frozenset(_read("$SYS/broker/log/#"))),
        Role(ROLE_REPORTS, frozenset([Acl("publishClientSend", f"{errors}/#")])),
        Role(ROLE_SHARE, frozenset([Acl("publishClientSend", f"{SHARE_ROOT}/#")])),
    ]


def hub_groups() -> list[Group]:
    """The hub's own logins get their role through a group of the same name: created with the login, the
    membership is linked both ways (a role given inline to createClient is not), and adding a login to a
    group it is in already says so plainly (addClientRole says "Internal error")."""
    return [Group(name, frozenset([name])) for name in HUB_WORKER_ROLES]


def partner_role(settings: HubSettings, partner_id: str) -> Role:
    """Publish under its own namespace; read its own error reports. Nothing else, no shared group."""
    ns, errors = settings.mqtt_namespace_root, settings.mqtt_error_root
    acls = [Acl("publishClientSend", f"{ns}/{partner_id}/#"), *_read(f"{errors}/{partner_id}/#")]
    return Role(partner_role_name(partner_id), frozenset(acls))


def partner_client(partner_id: str, username: str) -> Client:
    """A partner's login: bound to the client id equal to its user name, in the partner's group."""
    return Client(username, username, groups=frozenset([partner_role_name(partner_id)]))


def consumer_name(org: str) -> str:
    """An organisation's MQTT role, group and login for reading share streams: consumer-<id>."""
    return f"{CONSUMER_PREFIX}{org}"


def consumer_role(org: str) -> Role:
    """Subscribe to and receive its own share topics and open data's; nothing else (other consumers' share
    topics are refused at SUBSCRIBE, reason 135)."""
    return Role(consumer_name(org), frozenset([*_read(f"{SHARE_ROOT}/{org}/#"), *_read(f"{SHARE_ROOT}/{OPEN_DATA}/#")]))


def consumer_client(org: str) -> Client:
    name = consumer_name(org)
    return Client(name, name, groups=frozenset([name]))


def desired_accounts(
    settings: HubSettings, logins: Iterable[tuple[str, str]], consumers: Iterable[str] = ()
) -> Accounts:
    """The accounts the catalog asks for: the hub's roles, and per partner a role, a group and its logins.

    `logins`: (partner id, user name) for every partner's own login and every device login.
    The hub's own logins (admin, health, workers) are provisioned at run time and not listed.
    """
    want = Accounts(default_acl={t: False for t in DEFAULT_ACL_TYPES})
    for role in hub_roles(settings):
        want.roles[role.name] = role
    for group in hub_groups():
        want.groups[group.name] = group
    for partner_id, username in logins:
        role = partner_role(settings, partner_id)
        want.roles[role.name] = role
        want.groups[role.name] = Group(role.name, frozenset([role.name]))
        want.clients[username] = partner_client(partner_id, username)
    for org in consumers:  # organisations with a share stream over MQTT (hub/agreement/streams.py)
        name = consumer_name(org)
        want.roles[name] = consumer_role(org)
        want.groups[name] = Group(name, frozenset([name]))
        want.clients[name] = consumer_client(org)
    return want


def is_managed_name(name: str) -> bool:
    """A role or group the hub owns (a client holding one belongs to the hub or to a partner)."""
    return name.startswith((PARTNER_PREFIX, CONSUMER_PREFIX)) or name in (ROLE_ADMIN, *HUB_WORKER_ROLES)


def _role_json(role: Role) -> dict[str, Any]:
    return {"rolename": role.name, "acls": [acl_json(a) for a in sorted(role.acls)]}


def acl_json(acl: Acl) -> dict[str, Any]:
    return {"acltype": acl.acltype, "topic": acl.topic, "priority": acl.priority, "allow": acl.allow}


def bootstrap_document(settings: HubSettings, admin_password: str, health_password: str) -> dict[str, Any]:
    """The plugin's file, written before the broker first starts: default access denied, the hub's roles,
    the admin and the health probe with pre-hashed passwords (no plaintext ever reaches the broker for them).

    The admin is not bound to a client id: the control plane opens several connections at once
    (`hub apply` while workers provision their logins) and an admin can reset any password anyway.
    """
    return {
        "defaultACLAccess": {t: False for t in DEFAULT_ACL_TYPES},
        "roles": [_role_json(r) for r in hub_roles(settings)],
        "clients": [
            {
                "username": ADMIN_USER,
                "textname": "the hub's control plane",
                "roles": [{"rolename": ROLE_ADMIN}],
                **dynsec_password(admin_password),
            },
            {
                "username": HEALTH_USER,
                "clientid": HEALTH_USER,
                "textname": "health probes",
                "roles": [],
                **dynsec_password(health_password),
            },
        ],
        "groups": [{"groupname": g.name, "roles": [{"rolename": r} for r in sorted(g.roles)]} for g in hub_groups()],
    }
