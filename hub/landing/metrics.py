"""The landing worker's Prometheus metrics (names documented in docs/operations.md, "Metrics").

Counted once per written batch, from the batch's own result (hub/landing/writer.py `WriteResult`).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from hub import metrics  # noqa: F401  (the process-wide settings of prometheus-client: no `_created` series)
from hub.landing.writer import OffsetMove, TopicPartitionKey, WriteResult

ROWS = Counter("hub_land_rows", "Rows inserted into feed tables, by partner and feed.", ["partner", "feed"])
RECORDS_NOT_LANDED = Counter(
    "hub_land_records_not_landed",
    "Records landing did not insert, by partner, feed and outcome: duplicate (a device sent it twice), "
    "redelivered (the hub's own copy), or the reason it was dead-lettered.",
    ["partner", "feed", "outcome"],
)
DEAD_LETTERS_STORED = Counter("hub_land_dead_letters_stored", "Dead letters written to hub.dead_letters.")
BATCH_RECORDS = Histogram(
    "hub_land_batch_records",
    "Kafka records per landing batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
BATCH_SECONDS = Histogram(
    "hub_land_batch_duration_seconds",
    "Time to write one landing batch: its database transaction, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LAG = Gauge(
    "hub_land_lag_records",
    "Records in a partition's log that are not landed yet (log end - stored offset), per partition this worker "
    "owns; set after each batch of that partition.",
    ["topic", "partition"],
)
KAFKA_COMMIT_FAILURES = Counter(
    "hub_land_kafka_commit_failures",
    "Best-effort commits of landed offsets to the Kafka group that failed (the database keeps the offsets).",
)


def count_batch(result: WriteResult, records: int, seconds: float, moves: dict[TopicPartitionKey, OffsetMove]) -> None:
    BATCH_RECORDS.observe(records)
    BATCH_SECONDS.observe(seconds)
    for (partner, feed), n in result.rows_by_feed.items():
        if n:
            ROWS.labels(partner, feed).inc(n)
    for (partner, feed, outcome), n in result.outcomes.items():
        if n:
            RECORDS_NOT_LANDED.labels(partner, feed, outcome).inc(n)
    if result.dead_letters_stored:
        DEAD_LETTERS_STORED.inc(result.dead_letters_stored)
    for key in result.stored:
        move = moves[key]
        if move.log_end is not None:
            LAG.labels(key[0], str(key[1])).set(max(0, move.log_end - move.next))


def forget(tps: Iterable[TopicPartition]) -> None:
    """Partitions this worker no longer owns: their lag is another worker's to report."""
    for tp in tps:
        try:
            LAG.remove(tp.topic, str(tp.partition))
        except KeyError:
            continue
