"""A share lane whose feed topic landing recreated (to free the local broker's memory) follows the new log at once.

Landing recreates a feed topic once every record is landed and shared, and sets the stored positions of
landing and of every share lane back to 0 (hub/landing/broker_memory.py). The lane's consumer keeps its old
position and would read nothing until the new log passed it; its fetches show the log is now shorter than
that position, and the lane positions itself again from what is stored, without waiting for its idle check
(set to an hour here, so only the shorter log can tell it).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.agreement import names
from hub.landing.broker_memory import free_landed_topics
from hub.settings import HubSettings
from hub.share.worker import ShareWorker
from tests.integration.sharing_support import Workspace
from tests.integration.support import (
    FeedWriter,
    air_quality_records,
    eventually,
    feed_runtime,
    own_group,
    running,
    running_land,
)

AGREEMENT = """\
agreements:
  - {id: r_fields_{tag}, provider: {partner}, consumers: [city_{tag}], purpose: t, licence: L,
     delivery: [sql, kafka], grants: [{feed: air, fields: [pm25]}]}
"""
DEVICES = [f"rc-{i}" for i in range(8)]


async def test_a_lane_follows_a_recreated_feed_topic_as_soon_as_its_log_is_shorter_than_the_lane_position(
    stack_settings: HubSettings, tmp_path: Path
) -> None:
    w = Workspace(tmp_path, stack_settings)
    w.setup(["city"])
    w.write("agreements/lab.yaml", AGREEMENT)
    await w.apply()
    settings = own_group(stack_settings).replace(
        share_group=f"share-{w.tag}", share_idle_check_s=3600.0, land_free_broker_memory_min_records=1
    )
    feed = await feed_runtime(settings, w.partner, "air")
    topic = feed.row.kafka_topic
    share_topic = names.share_topic(w.org("city"), w.partner, "air")
    before = [r for d in DEVICES for r in air_quality_records(d, 10)]
    after = [r for d in DEVICES for r in air_quality_records(d, 1, start_ms=before[-1]["time"] + 60_000)]

    async with running_land(settings), FeedWriter(settings, feed) as writer:
        async with running(ShareWorker(settings, settings.endpoints())) as share:
            lane = share.lanes["now"]

            def shared_up_to() -> int:
                return sum(offset for tp, offset in lane.expected.items() if tp.topic == topic)

            await writer.send(before)
            assert await eventually(lambda: shared_up_to() == len(before), 30), "the first records were not shared"

            conn = await asyncpg.connect(settings.endpoints().database_url)
            try:

                async def all_landed() -> bool:
                    sql = "SELECT coalesce(sum(next_offset), 0) FROM hub.land_offsets WHERE topic = $1"
                    return int(await conn.fetchval(sql, topic)) == len(before)

                # Landing may trail sharing (its fetches wait for more records): a topic is freed only once landed.
                assert await eventually(all_landed, 30), "the first records were not landed"
                [freed] = await free_landed_topics(conn, settings, settings.endpoints(), [feed.row], catch_up_s=10.0)
            finally:
                await conn.close()
            assert freed.recreated, freed.reason
            fenced = share.fenced

            # Each partition's new log is shorter than where the lane stood (a tenth of the records per device).
            await writer.send(after)
            assert await eventually(lambda: share.fenced > fenced and shared_up_to() == len(after), 20), (
                f"the lane did not follow the recreated topic: it stands at {shared_up_to()} of {len(after)}"
            )

    # Every device's record sent after the recreation reached the share topic too (at least once: 11 per key).
    counts = await count_keys(settings.endpoints().kafka_bootstrap, share_topic, {d.encode() for d in DEVICES}, 11)
    assert all(counts[d.encode()] >= 11 for d in DEVICES), counts


async def count_keys(
    bootstrap: str, topic: str, keys: set[bytes], want: int, timeout_s: float = 20.0
) -> Counter[bytes]:
    """Records per key in `topic`, read from its start until each of `keys` was seen `want` times (or time runs out)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    counts: Counter[bytes] = Counter()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(counts[k] < want for k in keys) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                counts.update(r.key for r in records if r.key in keys)
    finally:
        await consumer.stop()
    return counts
