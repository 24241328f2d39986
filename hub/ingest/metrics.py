"""The ingest worker's Prometheus metrics (names documented in docs/operations.md, "Metrics").

Counted once per batch (a labelled increment costs a few microseconds; a batch has hundreds of
messages), from what the batch's preparation already produced; the inbox and the messages waiting
for their acknowledgement are read only when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from hub import metrics  # noqa: F401  (the process-wide settings of prometheus-client: no `_created` series)
from hub.ingest.outgoing import Outgoing

ACCEPTED = Counter(
    "hub_ingest_messages_accepted", "MQTT messages turned into a feed record, by partner and feed.", ["partner", "feed"]
)
REFUSED = Counter(
    "hub_ingest_messages_refused",
    "MQTT messages refused (dead-lettered), by partner, feed and reason (`_unknown` feed: no feed matches).",
    ["partner", "feed", "reason"],
)
SKIPPED = Counter(
    "hub_ingest_messages_skipped",
    "MQTT messages acknowledged without a record (a CSV header line), by partner, feed and reason.",
    ["partner", "feed", "reason"],
)
ACKNOWLEDGED = Counter("hub_ingest_messages_acknowledged", "PUBACKs sent to the MQTT broker.")
BATCH_MESSAGES = Histogram(
    "hub_ingest_batch_messages",
    "MQTT messages per ingest batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
KAFKA_RECORDS = Histogram(
    "hub_kafka_send_batch_records",
    "Records per Kafka delivery (one ingest batch, sent as one record batch per partition).",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
KAFKA_SECONDS = Histogram(
    "hub_kafka_send_duration_seconds",
    "Time from sending an ingest batch to Kafka until every record is acknowledged (retries included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
INBOX = Gauge("hub_ingest_inbox_messages", "MQTT messages received and not yet processed (the inbox's depth).")
UNACKNOWLEDGED = Gauge(
    "hub_ingest_unacknowledged_messages",
    "MQTT messages processed and not yet acknowledged (waiting for Kafka, or for landing in `landed` mode).",
)


def watch(inbox: Callable[[], int], unacknowledged: Callable[[], int]) -> None:
    """Read at scrape time: nothing is done per message."""
    INBOX.set_function(inbox)
    UNACKNOWLEDGED.set_function(unacknowledged)


def count_batch(
    messages: int,
    outgoing: list[Outgoing],
    skipped: Tally[tuple[str, str, str]],
    feed_of: dict[str, tuple[str, str]],
) -> None:
    """One batch's counts: accepted records per feed topic, dead letters per reason, skipped messages."""
    BATCH_MESSAGES.observe(messages)
    accepted: Tally[str] = Tally()
    refused: Tally[tuple[str, str, str]] = Tally()
    for o in outgoing:
        if o.refused is None:
            accepted[o.topic] += 1
        else:
            refused[o.refused] += 1
    for topic, n in accepted.items():
        partner, feed = feed_of.get(topic, ("_unknown", topic))
        ACCEPTED.labels(partner, feed).inc(n)
    for (partner, feed, reason), n in refused.items():
        REFUSED.labels(partner, feed, reason).inc(n)
    for (partner, feed, reason), n in skipped.items():
        SKIPPED.labels(partner, feed, reason).inc(n)


class KafkaTimer:
    """Times one delivery to Kafka: `with KafkaTimer(len(records)): await send(...)`."""

    def __init__(self, records: int) -> None:
        self.records = records

    def __enter__(self) -> KafkaTimer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            KAFKA_RECORDS.observe(self.records)
            KAFKA_SECONDS.observe(time.perf_counter() - self.started)
