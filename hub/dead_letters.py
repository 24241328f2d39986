"""The dead-letter topic's record format, which ingest and landing both write and people and tools read.

A dead letter keeps the refused message's own bytes as its value (the MQTT payload, or the
Kafka record landing could not use) and says why in its headers. Every header name is here.
"""

from __future__ import annotations

from collections.abc import Iterable

REASON = "reason"  # machine-readable code, e.g. missing_field, not_decodable, refused_by_database
MESSAGE = "message"  # the reason in the partner's words
STAGE = "stage"  # where it was refused: absent for ingest, "landing" for landing
PARTNER = "partner"
FEED = "feed"  # "_unknown" for a topic no feed matches
MQTT_TOPIC = "mqtt_topic"
RECEIVED_MS = "received_ms"  # when the MQTT message reached the ingest worker, epoch milliseconds
AGREEMENT = "agreement"  # on dead letters of the share streams: the agreement whose stream refused the record
DEVICE = "device"  # on feed records: the device id (also the record key)
# On feed records the hub sent more than once: "mqtt" when the MQTT broker delivered the message again
# (DUP flag: a worker did not acknowledge it before it stopped), "resend" when ingest sent the record
# again itself (Kafka or the broker epoch did not confirm the first send). Landing counts such a record
# that meets an identical row as `redelivered`, not as a duplicate a device sent.
REDELIVERY = "redelivery"

Headers = list[tuple[str, bytes]]


def refused(reason: str, message: str, *, stage: str | None = None, keep: Iterable[tuple[str, bytes]] = ()) -> Headers:
    """Headers of a dead letter: `keep` (a refused record's own headers) without any earlier verdict, then this one."""
    ours = (REASON, MESSAGE, STAGE)
    headers = [h for h in keep if h[0] not in ours]
    headers += [(REASON, reason.encode()), (MESSAGE, message.encode())]
    if stage is not None:
        headers.append((STAGE, stage.encode()))
    return headers
