"""The feeds a landing worker lands, as it last read them: per topic the feed, its row builder and table, and
every schema version seen by id (records of older versions are read through the current one); and the
dead-letter topic, whose records become rows of `hub.dead_letters` (dead_letter_rows.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from hub.catalog import store as catalog
from hub.catalog.runtime import FeedRuntime
from hub.catalog.topics import feed_topic_specs
from hub.kafka import TopicSpec
from hub.landing.dead_letter_rows import Row, dead_letter_row
from hub.landing.rows import Rejected, RowBuilder
from hub.landing.writer import TableBatch
from hub.schema.avro import FeedSchema
from hub.schema.wire import schema_id_of
from hub.settings import HubSettings

log = logging.getLogger("hub.land")


@dataclass
class Built:
    """The rows of one fetched batch, built before its offsets are worked out."""

    partitions: set[TopicPartition]
    batches: list[TableBatch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dead_letters: list[tuple[tuple[str, int], Row]] = field(default_factory=list)  # ((topic, partition), row)


class LandingFeeds:
    def __init__(self, dead_letter_topic: str | None = None) -> None:
        self.dead_letter_topic = dead_letter_topic  # also landed (into hub.dead_letters) when set
        self.by_topic: dict[str, FeedRuntime] = {}
        self.builders: dict[str, RowBuilder] = {}
        self.signatures: dict[str, str] = {}  # topic -> the table's column types, for its staging table
        self.schemas: dict[int, FeedSchema | None] = {}  # None: looked up, not in the registry

    @property
    def topics(self) -> list[str]:
        """Every topic landed: the feeds' and the dead-letter topic (once there is a feed)."""
        extra = [self.dead_letter_topic] if self.dead_letter_topic and self.by_topic else []
        return sorted([*self.by_topic, *extra])

    def topic_specs(self, settings: HubSettings) -> list[TopicSpec]:
        return feed_topic_specs(settings, (f.row for f in self.by_topic.values()))

    def versions(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """topic -> (current schema id, columns landed): what a catalog reload may change."""
        return {t: (f.schema_id, tuple(self.builders[t].columns)) for t, f in self.by_topic.items()}

    async def use(self, conn: asyncpg.Connection, feeds: Iterable[FeedRuntime]) -> None:
        """Land these feeds from now on, into their tables' columns as the database has them."""
        by_topic = {f.row.kafka_topic: f for f in feeds}
        builders: dict[str, RowBuilder] = {}
        signatures: dict[str, str] = {}
        for topic, f in by_topic.items():
            table = await catalog.table_columns(conn, f.row.table_schema, f.row.table_name)
            missing = [c.name for c in f.schema.columns if c.name not in table]
            if missing:
                log.warning(
                    "%s.%s lacks columns %s of schema version %s: they are not landed until `hub apply` adds them",
                    f.row.table_schema, f.row.table_name, missing, f.row.schema_version,
                )  # fmt: skip
            builders[topic] = RowBuilder(f.schema, self.schemas.get, [c for c in table if c not in missing])
            signatures[topic] = ",".join(f"{name} {col.sql_type}" for name, col in sorted(table.items()))
            self.schemas.setdefault(f.schema_id, f.schema)
        self.by_topic, self.builders, self.signatures = by_topic, builders, signatures

    def unknown_schema_ids(self, data: Mapping[TopicPartition, Sequence[Any]]) -> set[int]:
        """Schema ids in these records that were never looked up."""
        unknown = set()
        for tp, records in data.items():
            if tp.topic == self.dead_letter_topic:  # raw payloads: a leading 0 byte is no schema id
                continue
            for r in records:
                sid = schema_id_of(r.value)
                if sid is not None and sid not in self.schemas:
                    unknown.add(sid)
        return unknown

    def build(self, data: Mapping[TopicPartition, Sequence[Any]], met_landed: set[tuple[str, str]]) -> Built:
        """Rows per table; `met_landed` are the tables whose last batch met rows already landed."""
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, records in data.items():
            by_topic[tp.topic].extend(records)
        built = Built(set(data))
        if self.dead_letter_topic is not None:
            now = datetime.now(UTC)
            for tp, records in data.items():
                if tp.topic == self.dead_letter_topic:
                    key = (tp.topic, tp.partition)
                    built.dead_letters += [(key, dead_letter_row(r, now)) for r in records]
        for topic, records in by_topic.items():
            feed = self.by_topic.get(topic)
            if feed is None:  # no longer a feed of the catalog: nothing to land
                continue
            rows = self.builders[topic].build(records)
            built.rejected += rows.rejected
            row = feed.row
            built.batches.append(
                TableBatch(
                    row.partner_id,
                    row.name,
                    row.table_schema,
                    row.table_name,
                    rows,
                    self.signatures.get(topic, ""),
                    copy_first=(row.table_schema, row.table_name) not in met_landed,
                )
            )
        return built
