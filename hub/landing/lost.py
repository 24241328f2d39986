"""What a lost log took with it, counted exactly from what ingest acknowledged.

With `HUB_INGEST_ACK=kafka` an ingest worker acknowledges a message once Kafka has its record,
and records, in the same round trip that releases its topic locks, the positions of the records
it acknowledged (`hub.ingest_acked`: per epoch, topic and partition, ranges of
`base_offset + offset`, see hub/ingest/ack_ledger.py). When the broker then loses its log (a
restarted local broker) or a partition's log is found shorter than what was landed, the records
lost are exactly the acknowledged ones at or beyond the partition's landed position; records
nobody acknowledged (a send that was not confirmed is sent again) are not counted. With
`HUB_INGEST_ACK=landed` nothing is acknowledged before it is landed, so nothing is recorded here
and nothing can be lost.
"""

from __future__ import annotations

import asyncpg

# Per topic: acknowledged records of `$1`'s epoch at or beyond their partition's landed position
# (optionally only partition `$3` of topic `$2`).
_LOST_SQL = """
SELECT a.topic, sum(greatest(0, a.next_position - greatest(a.first_position,
                                                           coalesce(o.base_offset + o.next_offset, 0))))::bigint AS n
FROM hub.ingest_acked a
LEFT JOIN hub.land_offsets o ON o.topic = a.topic AND o.kafka_partition = a.kafka_partition
WHERE a.epoch = $1 AND ($2::text IS NULL OR (a.topic = $2 AND a.kafka_partition = $3))
GROUP BY a.topic
"""


async def count_lost(
    conn: asyncpg.Connection, epoch: str, topic: str | None = None, partition: int | None = None
) -> dict[str, int]:
    """Acknowledged records not landed, per topic, in `epoch` (or one partition of it); forgets their ranges.

    Call it in the transaction that sets the offsets back, before it does.
    """
    rows = await conn.fetch(_LOST_SQL, epoch, topic, partition)
    await conn.execute(
        """DELETE FROM hub.ingest_acked
           WHERE epoch = $1 AND ($2::text IS NULL OR (topic = $2 AND kafka_partition = $3))""",
        epoch,
        topic,
        partition,
    )
    return {r["topic"]: int(r["n"]) for r in rows if r["n"]}


async def record_lost(conn: asyncpg.Connection, lost: dict[str, int]) -> None:
    """Add the counts to each feed's `lost` outcome (a topic no feed has any more is counted under `_unknown`)."""
    if not lost:
        return
    await conn.execute(
        """INSERT INTO hub.land_outcomes (partner_id, feed, outcome, records)
           SELECT coalesce(f.partner_id, '_unknown'), coalesce(f.name, l.topic), 'lost', l.n
           FROM unnest($1::text[], $2::bigint[]) AS l(topic, n)
           LEFT JOIN hub.feeds f ON f.kafka_topic = l.topic
           ON CONFLICT (partner_id, feed, outcome)
           DO UPDATE SET records = hub.land_outcomes.records + excluded.records, last_at = now()""",
        list(lost),
        list(lost.values()),
    )
