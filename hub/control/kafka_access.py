"""Kafka logins for the consumers of share streams: whether the hub hands them out, and the requests that make them.

Pure: which broker takes logins (`access_mode`), the user and ACLs of an organisation that reads a share
stream over Kafka (`consumer_acls`), what changes between the catalog and what the agreements want
(`plan_access`), and those requests as confluent-kafka's AdminClient objects (`acl_binding`,
`scram_upsertion`, ...). The I/O that sends them is `kafka_users.py`.

An organisation `<org>` reading a stream over Kafka gets the SASL/SCRAM-SHA-512 user `consumer-<org>` (the
name of its MQTT login too) allowed exactly: READ and DESCRIBE on topics prefixed `share.<org>.` and
`share.open_data.`, and READ and DESCRIBE on consumer groups prefixed `share.<org>.`. The trailing dot
matters: organisation ids have no dots, so `share.city.` is never a prefix of `share.city_lab.`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from hub.agreement import names
from hub.identifiers import check_identifier
from hub.mqtt_auth.accounts import consumer_name
from hub.settings import HubSettings

MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 8192  # Kafka refuses fewer than 4096 for SCRAM-SHA-512
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class AccessMode:
    """Whether the hub hands out Kafka logins on this broker, and one line saying why (or why not)."""

    issues_logins: bool
    reason: str


def access_mode(settings: HubSettings, local_broker: bool) -> AccessMode:
    if local_broker:
        return AccessMode(
            False,
            "no Kafka login: the local stack's broker (Tansu) has no authentication, so the hub hands out none "
            "rather than pretend; every client on this machine can read every topic there, share topics included",
        )
    if settings.kafka_consumer_logins == "off":
        return AccessMode(False, "no Kafka login: HUB_KAFKA_CONSUMER_LOGINS=off (the operator manages Kafka access)")
    if settings.kafka_security_protocol.upper() not in SASL_PROTOCOLS:
        return AccessMode(
            False,
            f"no Kafka login: the broker is reached with HUB_KAFKA_SECURITY_PROTOCOL="
            f"{settings.kafka_security_protocol}, without SASL, so it takes no logins; run it with SASL/SCRAM "
            "and ACLs (as docker-compose.yml does) for the hub to make one per consumer",
        )
    return AccessMode(True, f"Kafka login per consumer: SASL/{MECHANISM} user consumer-<org>, prefix ACLs")


def kafka_user(org: str) -> str:
    return consumer_name(check_identifier(org, "organisation id"))


def topic_prefix(org: str | None) -> str:
    """`share.<org>.`, or `share.open_data.` for open data (None)."""
    return f"{names.SHARE_TOPIC_PREFIX}{names.stream_consumer(org)}."


def group_prefix(org: str) -> str:
    """The consumer groups an organisation may use: `share.<org>.<anything>`."""
    return topic_prefix(org)


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule for one user: (topic | group) x prefix x operation, from any host."""

    user: str
    resource: str  # "topic" or "group"
    prefix: str
    operation: str  # "read" or "describe"

    @property
    def principal(self) -> str:
        return f"User:{self.user}"

    def describe(self) -> str:
        return f"{self.principal} {self.operation.upper()} {self.resource} {self.prefix}*"


def consumer_acls(org: str) -> list[Acl]:
    user = kafka_user(org)
    rules = [("topic", topic_prefix(org)), ("topic", topic_prefix(None)), ("group", group_prefix(org))]
    return [Acl(user, resource, prefix, op) for resource, prefix in rules for op in ("read", "describe")]


@dataclass(frozen=True)
class AccessPlan:
    """What `hub apply` changes on the broker: new users (a password is made and shown once), ACLs to make
    (every wanted one: creating an existing ACL changes nothing), users whose streams all ended."""

    new_users: list[str]  # organisations
    kept_users: list[str]
    removed_users: list[str]
    acls: list[Acl]
    removed_acls: list[Acl]

    @property
    def empty(self) -> bool:
        return not (self.new_users or self.removed_users)


def plan_access(wanted: Iterable[str], existing: Iterable[str]) -> AccessPlan:
    """`wanted`: organisations reading some stream over Kafka now; `existing`: those with a login in the catalog."""
    want, have = set(wanted), set(existing)
    return AccessPlan(
        new_users=sorted(want - have),
        kept_users=sorted(want & have),
        removed_users=sorted(have - want),
        acls=sorted(a for org in sorted(want) for a in consumer_acls(org)),
        removed_acls=sorted(a for org in sorted(have - want) for a in consumer_acls(org)),
    )


# --- as confluent-kafka's AdminClient requests ---------------------------------------------------------------

_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
_OPERATION = {"read": AclOperation.READ, "describe": AclOperation.DESCRIBE}


def _acl_args(acl: Acl) -> tuple[Any, ...]:
    """One prefixed ALLOW rule, as both confluent-kafka's binding (to create) and its filter (to delete) take it."""
    return (
        _RESOURCE[acl.resource],
        acl.prefix,
        ResourcePatternType.PREFIXED,
        acl.principal,
        "*",
        _OPERATION[acl.operation],
        AclPermissionType.ALLOW,
    )


def acl_binding(acl: Acl) -> AclBinding:
    return AclBinding(*_acl_args(acl))


def acl_filter(acl: Acl) -> AclBindingFilter:
    return AclBindingFilter(*_acl_args(acl))


def scram_upsertion(user: str, password: str, salt: bytes | None = None) -> UserScramCredentialUpsertion:
    return UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS), password.encode(), salt
    )


def scram_deletion(user: str) -> UserScramCredentialDeletion:
    return UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)


def client_config(bootstrap: str, org: str, password: str, protocol: str) -> dict[str, str]:
    """What a consumer puts in its confluent-kafka configuration (shown with the password, once)."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        "sasl.mechanism": MECHANISM,
        "sasl.username": kafka_user(org),
        "sasl.password": password,
        "group.id": f"{group_prefix(org)}<your name>",
    }
