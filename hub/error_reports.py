"""Error reports: what a partner reads on its MQTT error topic when one of its messages is refused.

Ingest reports a message it cannot take (not decodable, invalid, no feed); landing reports a
record whose `(device_id, time)` was already landed with other values. Both publish on
`<mqtt_error_root>/<partner>/<feed>` and at most `per_second` reports per partner, so a broken
device cannot flood its owner (the dead letter and the counters keep every refusal).
"""

from __future__ import annotations

import time

import orjson


def report_topic(error_root: str, partner: str, feed: str) -> str:
    return f"{error_root}/{partner}/{feed}"


def report_payload(topic: str, feed: str, reason: str, message: str, received_ms: int | None) -> bytes:
    """The report as JSON: the MQTT topic the message came on, its feed, the reason code and the reason in words."""
    return orjson.dumps(
        {"topic": topic, "feed": feed, "reason": reason, "message": message, "received_ms": received_ms}
    )


class ErrorReports:
    """At most `per_second` error reports per partner (a token bucket each)."""

    def __init__(self, per_second: float = 20.0) -> None:
        self.per_second = per_second
        self._allowance: dict[str, tuple[float, float]] = {}

    def allow(self, partner: str) -> bool:
        now = time.monotonic()
        tokens, last = self._allowance.get(partner, (self.per_second, now))
        tokens = min(self.per_second, tokens + (now - last) * self.per_second)
        if tokens < 1:
            self._allowance[partner] = (tokens, now)
            return False
        self._allowance[partner] = (tokens - 1, now)
        return True
