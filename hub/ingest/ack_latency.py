"""How long a message waits for its PUBACK: from its arrival at the ingest worker to the acknowledgement.

While a message is not acknowledged the MQTT broker holds it for the worker's session, so this is
what each acknowledgement mode costs the broker (and a device's session, were it the receiver).
Counted per worker in log-spaced buckets (10% apart), cumulative since the worker started, and
written with its periodic flush to `hub.resources` (kind `ingest-ack-latency`), where `hub bench`
reads and merges them.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Iterable

KIND = "ingest-ack-latency"
# Bucket i holds waits below EDGES[i] ms (the last one everything longer): 0.5 ms to ~10 min.
EDGES = [0.5 * 1.1**i for i in range(150)]


class AckLatency:
    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()

    def record(self, received_ms: Iterable[int], now_ms: float) -> None:
        """One acknowledgement of messages that arrived at `received_ms` (a batch shares a few of them)."""
        last, index = -1, 0
        for r in received_ms:
            if r != last:
                last, index = r, bisect.bisect_right(EDGES, now_ms - r)
            self.buckets[index] += 1

    def as_json(self) -> str:
        return json.dumps({str(i): n for i, n in sorted(self.buckets.items())})


def parse(detail: str) -> Counter[int]:
    try:
        data = json.loads(detail)
        return Counter({int(k): int(v) for k, v in data.items()})
    except (ValueError, TypeError, AttributeError):
        return Counter()


def percentile(buckets: Counter[int], p: float) -> float:
    """The upper edge (ms) of the bucket holding the p-th percentile; NaN without data."""
    total = sum(buckets.values())
    if not total:
        return math.nan
    rank = p / 100 * total
    seen = 0
    for i in sorted(buckets):
        seen += buckets[i]
        if seen >= rank:
            return EDGES[min(i, len(EDGES) - 1)]
    return EDGES[-1]
