"""Kafka clients configured from settings, and topic administration.

Errors from aiokafka are mapped to `ServerUnavailable` here, at the boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from hub.errors import ServerUnavailable
from hub.settings import HubSettings

# What a Kafka client can raise while the broker is away, restarting or slow: all of it passes.
TRANSIENT_KAFKA_ERRORS: tuple[type[Exception], ...] = (KafkaError, OSError, TimeoutError)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


def client_options(settings: HubSettings, bootstrap: str) -> dict[str, Any]:
    """Connection options shared by producers, consumers and the admin client."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        opts.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return opts


def is_local_broker(settings: HubSettings, bootstrap: str) -> bool:
    """True when `bootstrap` is the local stack's broker (Tansu: its log lives in memory only)."""
    local = settings.stack_state().get("endpoints", {}).get("kafka_bootstrap")
    return bool(local) and local == bootstrap


def dead_letter_spec(settings: HubSettings) -> TopicSpec:
    return TopicSpec(
        settings.kafka_dead_letter_topic,
        settings.kafka_partitions,
        settings.kafka_replication_factor,
        {"retention.ms": str(settings.kafka_retention_ms)},
    )


class KafkaAdmin:
    """Create and list topics; an async context manager."""

    def __init__(self, settings: HubSettings, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._client = AIOKafkaAdminClient(**client_options(settings, bootstrap), request_timeout_ms=10_000)

    async def __aenter__(self) -> KafkaAdmin:
        try:
            await asyncio.wait_for(self._client.start(), 15)
        except TRANSIENT_KAFKA_ERRORS as exc:
            await self._client.close()
            raise ServerUnavailable(
                "Kafka", self.bootstrap, f"{exc!r}; start it with `hub stack up` or check HUB_KAFKA_BOOTSTRAP"
            ) from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def topics(self) -> set[str]:
        try:
            return set(await self._client.list_topics())
        except KafkaError as exc:
            raise ServerUnavailable("Kafka", self.bootstrap, f"cannot list topics: {exc!r}") from exc

    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Create the topics that do not exist yet; returns the names created."""
        existing = await self.topics()
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        new = [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs) for s in missing]
        try:
            await self._client.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            raise ServerUnavailable("Kafka", self.bootstrap, f"cannot create topics: {exc!r}") from exc
        return [s.name for s in missing]

    async def delete_topics(self, names: Iterable[str]) -> None:
        """Delete these topics (gone already is fine)."""
        names = list(names)
        if not names:
            return
        try:
            await self._client.delete_topics(names)
        except UnknownTopicOrPartitionError:
            pass
        except KafkaError as exc:
            raise ServerUnavailable("Kafka", self.bootstrap, f"cannot delete topics: {exc!r}") from exc
