"""The share worker's Prometheus metrics (names documented in docs/operations.md, "Metrics").

Counted from what a batch (or a closed aggregate window) stores as shared, once the store succeeded: the same numbers
`hub stats` shows per stream, as counters a monitoring system can rate.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from hub import metrics  # noqa: F401  (the process-wide settings of prometheus-client: no `_created` series)
from hub.share.store import Shared

RECORDS = Counter(
    "hub_share_records",
    "Records written to share streams (Kafka and/or MQTT), by agreement, consumer, feed and form.",
    ["agreement", "consumer", "feed", "form"],
)
DEAD_LETTERS = Counter(
    "hub_share_dead_letters",
    "Records a stream could not project (dead-lettered with the agreement named), by agreement, consumer and feed.",
    ["agreement", "consumer", "feed"],
)


def count(shared: Mapping[str, Shared]) -> None:
    for s in shared.values():
        if s.records:
            RECORDS.labels(s.agreement, s.consumer, s.feed, s.form).inc(s.records)
        if s.dead_lettered:
            DEAD_LETTERS.labels(s.agreement, s.consumer, s.feed).inc(s.dead_lettered)
