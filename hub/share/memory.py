"""Share topics on the local broker: bounded memory, and nothing dropped that a consumer has not read.

The local broker (Tansu) keeps every record in memory until its topic is deleted (no retention, no
DeleteRecords). So a share topic is deleted and created again empty when
1. it holds at least `share_free_min_records` records and its consumer's groups (`share.<org>.*`, the
   groups its Kafka login may use on a real deployment) have together committed every record: the
   smallest committed offset of those groups equals the log end in every partition (the log end as a fetch
   reports it, not ListOffsets, which can report one batch less on Tansu); or
2. whatever was read, it holds at least `share_local_max_records` records (the documented bound): the
   records no group had committed are dropped, counted, logged and recorded as a `share-topic-recreated`
   event.
The groups' committed offsets are then set to 0, where the new log starts.

Records produced between the check and the delete would be lost: share workers hold each share topic's
lock (`TOPIC_LOCK_SPACE`, shared, as ingest does for feed topics) from before they hand records to the
Kafka client until the broker acknowledged them (`producing`); the check takes it exclusively, trying only,
and holds it until the topic exists again.

What a recreation does to a consumer reading at that moment is the client's: a confluent-kafka consumer
(librdkafka 2.16) that has the topic assigned crashed with a segmentation fault in every try here, and an
aiokafka consumer keeps its old position and reads nothing until the new log passes it. Consumers of the
local stack are told so in docs/operations.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from hub.catalog.locks import TRY_RECREATE_SQL, producer_lock_sql
from hub.kafka import KafkaAdmin, client_options
from hub.settings import HubSettings
from hub.share.outputs import share_topic_spec

log = logging.getLogger("hub.share.memory")
LOCK, UNLOCK = producer_lock_sql()


@contextlib.asynccontextmanager
async def producing(conn: asyncpg.Connection, topics: Iterable[str]) -> AsyncIterator[None]:
    """Hold these share topics against recreation while records are sent to them."""
    held = sorted(set(topics))
    if held:
        await conn.execute(LOCK, held)
    try:
        yield
    finally:
        if held:
            await conn.execute(UNLOCK, held)


@dataclass(frozen=True)
class Outcome:
    topic: str
    recreated: bool
    records: int  # records the topic held
    unread: int  # of them, not committed by any of the consumer's groups (dropped if recreated)
    reason: str


def consumer_groups(all_groups: Iterable[str], org_prefix: str) -> list[str]:
    return sorted(g for g in all_groups if g.startswith(org_prefix))


def decide(
    ends: dict[int, int], committed: dict[int, int] | None, min_records: int, max_records: int
) -> tuple[bool, int, str]:
    """(recreate?, unread records, why) from the log ends and the groups' smallest committed offsets (or None)."""
    total = sum(ends.values())
    unread = total if committed is None else sum(max(0, e - committed.get(p, 0)) for p, e in ends.items())
    if total >= max_records:
        return True, unread, f"holds {total} records, the bound is {max_records}: recreated, {unread} unread dropped"
    if total < min_records:
        return False, unread, f"holds {total} records, fewer than {min_records}"
    if committed is None:
        return False, unread, "none of the consumer's groups has committed an offset on it"
    if unread:
        return False, unread, f"{unread} records not committed by the consumer's groups yet"
    return True, 0, f"all {total} records committed by the consumer's groups"


async def _highwaters(settings: HubSettings, bootstrap: str, topic: str) -> dict[int, int] | None:
    """Each partition's log end, as a fetch reports it (None if some partition did not answer)."""
    consumer = AIOKafkaConsumer(**client_options(settings, bootstrap), enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return None
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        for _ in range(50):
            await consumer.getmany(timeout_ms=100, max_records=1)
            ends = {tp.partition: consumer.highwater(tp) for tp in tps}
            if all(e is not None for e in ends.values()):
                return {p: int(e) for p, e in ends.items() if e is not None}
        return None
    finally:
        await consumer.stop()


async def _committed(
    settings: HubSettings, bootstrap: str, topic: str, groups: list[str], parts: list[int]
) -> dict[int, int] | None:
    """The smallest offset any of `groups` committed per partition (0 where one committed none); None without groups."""
    if not groups:
        return None
    by_group = []
    for group in groups:
        consumer = AIOKafkaConsumer(**client_options(settings, bootstrap), group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            by_group.append({p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in parts})
        finally:
            await consumer.stop()
    return {p: min(c[p] for c in by_group) for p in parts}


async def _reset_groups(settings: HubSettings, bootstrap: str, topic: str, groups: list[str], parts: list[int]) -> None:
    for group in groups:
        consumer = AIOKafkaConsumer(**client_options(settings, bootstrap), group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
        except Exception as exc:  # a group with live members may refuse: its consumers start where they are
            log.warning("could not set the offsets of group %s on %s back to 0: %r", group, topic, exc)
        finally:
            await consumer.stop()


async def free_share_topic(
    conn: asyncpg.Connection, settings: HubSettings, bootstrap: str, topic: str, org_prefix: str
) -> Outcome:
    """Recreate `topic` if `decide` says so, holding its lock from the check until it exists again."""
    async with conn.transaction():
        if not await conn.fetchval(TRY_RECREATE_SQL, topic):
            return Outcome(topic, False, 0, 0, "a share worker is writing to it, or another worker is checking it")
        async with KafkaAdmin(settings, bootstrap) as admin:
            groups = consumer_groups(await admin.groups(), org_prefix)
        ends = await _highwaters(settings, bootstrap, topic)
        if ends is None:
            return Outcome(topic, False, 0, 0, "its partitions did not answer")
        committed = await _committed(settings, bootstrap, topic, groups, sorted(ends))
        recreate, unread, why = decide(
            ends, committed, settings.share_free_min_records, settings.share_local_max_records
        )
        total = sum(ends.values())
        if not recreate:
            return Outcome(topic, False, total, unread, why)
        async with KafkaAdmin(settings, bootstrap) as admin:
            await admin.delete_topics([topic])
            await admin.ensure_topics([share_topic_spec(settings, topic)])
        await _reset_groups(settings, bootstrap, topic, groups, sorted(ends))
        await conn.execute(
            "INSERT INTO hub.land_events (kind, topic, records, detail) VALUES ('share-topic-recreated', $1, $2, $3)",
            topic, total, f"{why}; groups {', '.join(groups) or 'none'}",
        )  # fmt: skip
    (log.warning if unread else log.info)("recreated %s to free the local broker's memory: %s", topic, why)
    return Outcome(topic, True, total, unread, why)
