"""What ingest writes to the database with each acknowledgement, in the round trips it already makes.

An ingest worker holds the shared locks of a batch's feed topics from before the send until Kafka
acknowledged every record (topic_locks.py). The statement that releases them also, in one round trip:

- reads the broker epoch (`hub.land_broker`, `FOR SHARE`, so it waits for a new epoch being started
  and then sees it): the acknowledgements count only if it is the epoch whose marker topic the
  broker still had after the send;
- with `HUB_INGEST_ACK=kafka` (the PUBACKs follow at once), records the batch's refused-message
  counters (`hub.ingest_counters`) and the positions of its feed records (`hub.ingest_acked`:
  `base_offset + offset`, per partition), so a broker that loses its log loses an exact, counted
  number of acknowledged records (hub/landing/lost.py);
- with `HUB_INGEST_ACK=landed`, reads each partition's `base_offset` and `generation`: what a
  record's offset means as a landed position, read while the topic cannot be recreated.

The reads see the database as it was when the statement started, still under the locks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.catalog.locks import TOPIC_LOCK_SPACE
from hub.ingest.outgoing import Outgoing

TopicPartitionKey = tuple[str, int]

# $1 topics to unlock; $2 the epoch the send was confirmed in (NULL: epochs are not checked, and no range
# is recorded); $3-$6 ranges (topic, partition, first offset, next offset) to record; $7-$10 counters
# (partner, feed, reason, messages); $11-$12 partitions whose base and generation to read; $13 whether
# Kafka confirmed the send (nothing is recorded otherwise).
RELEASE_SQL = f"""
WITH b AS (SELECT epoch FROM hub.land_broker FOR SHARE),
ranges AS (
    INSERT INTO hub.ingest_acked (epoch, topic, kafka_partition, first_position, next_position)
    SELECT b.epoch, r.t, r.p, coalesce(o.base_offset, 0) + r.f, coalesce(o.base_offset, 0) + r.n
    FROM b CROSS JOIN unnest($3::text[], $4::int[], $5::bigint[], $6::bigint[]) AS r(t, p, f, n)
    LEFT JOIN hub.land_offsets o ON o.topic = r.t AND o.kafka_partition = r.p
    WHERE $13 AND b.epoch = $2
),
counted AS (
    INSERT INTO hub.ingest_counters (partner_id, feed, reason, messages)
    SELECT c.partner, c.feed, c.reason, c.n
    FROM unnest($7::text[], $8::text[], $9::text[], $10::bigint[]) AS c(partner, feed, reason, n)
    WHERE $13 AND ($2::text IS NULL OR $2 = (SELECT epoch FROM b))
    ON CONFLICT (partner_id, feed, reason)
    DO UPDATE SET messages = hub.ingest_counters.messages + excluded.messages, last_at = now()
)
SELECT (SELECT epoch FROM b) AS epoch,
       (SELECT coalesce(array_agg(pg_advisory_unlock_shared({TOPIC_LOCK_SPACE}, hashtext(t))), '{{}}')
        FROM unnest($1::text[]) t) AS unlocked,
       (SELECT coalesce(array_agg(o.topic), '{{}}') FROM hub.land_offsets o
        JOIN unnest($11::text[], $12::int[]) AS k(t, p) ON o.topic = k.t AND o.kafka_partition = k.p) AS b_topics,
       (SELECT coalesce(array_agg(o.kafka_partition), '{{}}') FROM hub.land_offsets o
        JOIN unnest($11::text[], $12::int[]) AS k(t, p) ON o.topic = k.t AND o.kafka_partition = k.p) AS b_partitions,
       (SELECT coalesce(array_agg(o.base_offset), '{{}}') FROM hub.land_offsets o
        JOIN unnest($11::text[], $12::int[]) AS k(t, p) ON o.topic = k.t AND o.kafka_partition = k.p) AS b_bases,
       (SELECT coalesce(array_agg(o.generation), '{{}}') FROM hub.land_offsets o
        JOIN unnest($11::text[], $12::int[]) AS k(t, p) ON o.topic = k.t AND o.kafka_partition = k.p) AS b_generations
"""

# The broker epoch, and each partition's landed position (base_offset + next_offset) and generation.
POLL_SQL = """
SELECT (SELECT epoch FROM hub.land_broker) AS epoch,
       coalesce(array_agg(topic), '{}') AS topics, coalesce(array_agg(kafka_partition), '{}') AS partitions,
       coalesce(array_agg(base_offset + next_offset), '{}') AS landed,
       coalesce(array_agg(generation), '{}') AS generations
FROM hub.land_offsets WHERE topic = ANY($1::text[])
"""

COUNT_SQL = """
INSERT INTO hub.ingest_counters (partner_id, feed, reason, messages)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT (partner_id, feed, reason)
DO UPDATE SET messages = hub.ingest_counters.messages + excluded.messages, last_at = now()
"""

# Ranges of the current epoch that are landed: nothing can lose them any more.
PRUNE_SQL = """
DELETE FROM hub.ingest_acked a USING hub.land_offsets o, hub.land_broker b
WHERE a.epoch = b.epoch AND o.topic = a.topic AND o.kafka_partition = a.kafka_partition
  AND a.next_position <= o.base_offset + o.next_offset
"""


@dataclass(frozen=True)
class Released:
    """What the releasing round trip found: the epoch, and (landed mode) each partition's base and generation."""

    epoch: str | None
    unlocked: list[bool]
    baseline: dict[TopicPartitionKey, tuple[int, int]]  # (topic, partition) -> (base_offset, generation)


@dataclass(frozen=True)
class Landed:
    """What a poll found: the current epoch and each partition's landed position and generation."""

    epoch: str | None
    positions: dict[TopicPartitionKey, tuple[int, int]]  # (topic, partition) -> (base + next_offset, generation)


def refused_counts(outgoing: Iterable[Outgoing]) -> Counter[tuple[str, str, str]]:
    return Counter(o.refused for o in outgoing if o.refused is not None)


def counter_args(counts: Counter[tuple[str, str, str]]) -> tuple[list[str], list[str], list[str], list[int]]:
    keys = sorted(counts)
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [counts[k] for k in keys]


def release_args(
    topics: list[str],
    epoch: str | None,
    confirmed: bool,
    outgoing: list[Outgoing],
    landed_topics: set[str],
    *,
    record: bool,
    counts: Counter[tuple[str, str, str]] | None = None,
) -> tuple[Any, ...]:
    """The arguments of `RELEASE_SQL` for a batch sent in `epoch` (None: epochs are not checked).

    `topics` are the batch's feed topics (locked); `landed_topics` those whose records a wait for
    landing covers (feed topics, and the dead-letter topic where landing stores it).
    `confirmed`: Kafka acknowledged every record and the broker kept its log meanwhile; only then is
    anything recorded. `record` (kafka mode): write the batch's counters (its dead letters' and
    `counts`) and the positions of its records, one range per contiguous run of offsets; otherwise
    read the baseline its wait for landing needs.
    """
    empty: list[Any] = []
    if record:
        spans = list(_batch_spans(outgoing, set(topics)))  # feed records: a lost one is a lost reading
        counted = counter_args(refused_counts(outgoing) + (counts or Counter()))
        ranges = ([s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans], [s[3] for s in spans])
        return (topics, epoch, *ranges, *counted, empty, empty, confirmed)
    keys = sorted({(o.topic, o.partition) for o in outgoing if o.topic in landed_topics})
    nothing = (empty, empty, empty, empty, empty, empty, empty, empty)
    return (topics, epoch, *nothing, [k[0] for k in keys], [k[1] for k in keys], confirmed)


def needs_round_trip(args: tuple[Any, ...]) -> bool:
    """Whether `release_args` has anything to unlock, record or read."""
    return bool(args[0] or args[2] or args[6] or args[10])


def _batch_spans(outgoing: list[Outgoing], topics: set[str]) -> Iterable[tuple[str, int, int, int]]:
    """(topic, partition, first offset, next offset) of each contiguous run of acknowledged offsets."""
    by_tp: dict[TopicPartitionKey, list[int]] = {}
    for o in outgoing:
        if o.topic in topics and o.offset >= 0:
            by_tp.setdefault((o.topic, o.partition), []).append(o.offset)
    for (topic, partition), offsets in sorted(by_tp.items()):
        offsets.sort()
        first = prev = offsets[0]
        for off in offsets[1:]:
            if off != prev + 1:
                yield topic, partition, first, prev + 1
                first = off
            prev = off
        yield topic, partition, first, prev + 1


def released(row: asyncpg.Record) -> Released:
    baseline = {
        (t, p): (int(b), int(g))
        for t, p, b, g in zip(row["b_topics"], row["b_partitions"], row["b_bases"], row["b_generations"], strict=True)
    }
    return Released(row["epoch"], list(row["unlocked"]), baseline)


def landed(row: asyncpg.Record) -> Landed:
    positions = {
        (t, p): (int(n), int(g))
        for t, p, n, g in zip(row["topics"], row["partitions"], row["landed"], row["generations"], strict=True)
    }
    return Landed(row["epoch"], positions)
