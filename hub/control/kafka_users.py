"""Kafka logins of share-stream consumers on the broker and in the catalog (the requests: kafka_access.py).

`hub apply` plans them with everything else (`plan_changes`) and, where the broker takes logins, makes them
last, inside its database transaction (`execute`): a new consumer's SCRAM credential (a password made here,
shown once, its hash kept in `hub.kafka_logins`) and its prefix ACLs; a consumer whose Kafka streams all
ended loses both. On the local broker, or a broker reached without SASL, nothing is made and the plan says
why in one line. Apache Kafka answers these requests (AlterUserScramCredentials, CreateAcls, DeleteAcls)
only with an authorizer configured and SASL/SCRAM enabled, as docker-compose.yml runs it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from hub.control import kafka_access
from hub.control.plan import Change
from hub.errors import ServerUnavailable
from hub.kafka import is_local_broker, librdkafka_config
from hub.mqtt_auth.accounts import generate_secret, hash_password
from hub.settings import HubSettings

TIMEOUT_S = 30.0


@dataclass
class KafkaLogins:
    """What apply does about consumers' Kafka logins."""

    mode: kafka_access.AccessMode
    plan: kafka_access.AccessPlan | None = None  # None: the broker takes no logins
    wanting: list[str] = field(default_factory=list)  # organisations reading a stream over Kafka

    def changes(self) -> list[Change]:
        if self.plan is None:
            return []
        out = [Change("kafka-login", "create", kafka_access.kafka_user(o), "SASL/SCRAM-SHA-512, password shown once")
               for o in self.plan.new_users]  # fmt: skip
        out += [Change("kafka-login", "delete", kafka_access.kafka_user(o), "no Kafka stream any more")
                for o in self.plan.removed_users]  # fmt: skip
        out += [
            Change("kafka-acl", "create", a.describe()) for a in self.plan.acls if _org_of(a) in self.plan.new_users
        ]
        out += [Change("kafka-acl", "delete", a.describe()) for a in self.plan.removed_acls]
        return out

    def notes(self) -> list[str]:
        if self.plan is None and self.wanting:
            return [f"Kafka share streams of {', '.join(self.wanting)}: {self.mode.reason}"]
        return []


def _org_of(acl: kafka_access.Acl) -> str:
    return acl.user.removeprefix("consumer-")


async def plan_logins(
    settings: HubSettings, conn: asyncpg.Connection, bootstrap: str, wanting: list[str]
) -> KafkaLogins:
    mode = kafka_access.access_mode(settings, is_local_broker(settings, bootstrap))
    if not mode.issues_logins:
        return KafkaLogins(mode, None, wanting)
    existing = [r["org_id"] for r in await conn.fetch("SELECT org_id FROM hub.kafka_logins")]
    return KafkaLogins(mode, kafka_access.plan_access(wanting, existing), wanting)


def _wait(futures: dict[Any, Future[Any]], what: str, bootstrap: str) -> None:
    for key, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ServerUnavailable("Kafka", bootstrap, f"cannot {what} ({key}): {exc}") from exc


def _send(settings: HubSettings, bootstrap: str, plan: kafka_access.AccessPlan, passwords: dict[str, str]) -> None:
    admin = AdminClient(librdkafka_config(settings, bootstrap))
    alterations: list[Any] = [kafka_access.scram_upsertion(kafka_access.kafka_user(o), p) for o, p in passwords.items()]
    alterations += [kafka_access.scram_deletion(kafka_access.kafka_user(o)) for o in plan.removed_users]
    if alterations:
        _wait(admin.alter_user_scram_credentials(alterations), "set SCRAM credentials", bootstrap)
    if plan.acls:  # every wanted ACL: creating one that exists changes nothing, and repairs one removed by hand
        _wait(admin.create_acls([kafka_access.acl_binding(a) for a in plan.acls]), "create ACLs", bootstrap)
    if plan.removed_acls:
        _wait(admin.delete_acls([kafka_access.acl_filter(a) for a in plan.removed_acls]), "delete ACLs", bootstrap)


async def execute(
    conn: asyncpg.Connection, settings: HubSettings, bootstrap: str, logins: KafkaLogins
) -> dict[str, str]:
    """Make the planned logins (inside the caller's transaction); returns Kafka user name -> new password."""
    plan = logins.plan
    if plan is None or (plan.empty and not plan.acls):
        return {}
    passwords = {o: generate_secret() for o in plan.new_users}
    for org, password in passwords.items():
        await conn.execute(
            "INSERT INTO hub.kafka_logins (org_id, username, password_hash) VALUES ($1, $2, $3)",
            org, kafka_access.kafka_user(org), hash_password(password),
        )  # fmt: skip
    if plan.removed_users:
        await conn.execute("DELETE FROM hub.kafka_logins WHERE org_id = ANY($1::text[])", plan.removed_users)
    await asyncio.to_thread(_send, settings, bootstrap, plan, passwords)
    return {kafka_access.kafka_user(o): p for o, p in passwords.items()}
