"""The Kafka topics the catalog implies: one per feed, plus the dead-letter topic, each with its settings.

Ingest, landing, `hub apply` and `hub stack up` all create topics from these specs, so a topic
recreated after a broker restart gets the partitions it was created with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from hub.catalog import store as catalog
from hub.db import connection
from hub.kafka import KafkaAdmin, TopicSpec, dead_letter_spec
from hub.settings import HubSettings


class HasTopic(Protocol):
    """A feed as the catalog holds it (`FeedRow`) or as a config asks for it (`DesiredFeed`)."""

    @property
    def kafka_topic(self) -> str: ...

    @property
    def partitions(self) -> int: ...


def topic_spec(settings: HubSettings, f: HasTopic) -> TopicSpec:
    return TopicSpec(
        f.kafka_topic,
        f.partitions,
        settings.kafka_replication_factor,
        {"retention.ms": str(settings.kafka_retention_ms)},
    )


def feed_topic_specs(settings: HubSettings, feeds: Iterable[HasTopic]) -> list[TopicSpec]:
    """The dead-letter topic and every feed's topic."""
    return [dead_letter_spec(settings), *(topic_spec(settings, f) for f in feeds)]


async def ensure_feed_topics(settings: HubSettings) -> list[str]:
    """Create every applied feed's topic (and the dead-letter topic) that the broker lacks.

    The local broker forgets its topics when it stops; this recreates them with their
    configured partitions before any producer's first send could auto-create them.
    """
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn, KafkaAdmin(settings, ep.kafka_bootstrap) as admin:
        await catalog.ensure_catalog(conn)
        return await admin.ensure_topics(feed_topic_specs(settings, await catalog.feeds(conn)))
