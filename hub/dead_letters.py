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

# Kafka Connect's dead-letter headers (its `errors.deadletterqueue.context.headers.enable`), so tools made for
# Connect's dead-letter queues read ours too. Beside the hub's own, never instead of them; the origin
# (topic, partition, offset) only where there is one: landing refuses a Kafka record, ingest an MQTT message.
CONNECT_TOPIC = "__connect.errors.topic"
CONNECT_PARTITION = "__connect.errors.partition"
CONNECT_OFFSET = "__connect.errors.offset"
CONNECT_STAGE = "__connect.errors.stage"
CONNECT_EXCEPTION_MESSAGE = "__connect.errors.exception.message"
CONNECT_CONNECTOR = "__connect.errors.connector.name"
# Connect's stage for each of ours: ingest decodes and converts a payload (a converter's work); landing
# writes rows (a sink task's put), or cannot decode the record it read (again a converter's).
CONNECT_STAGES = {"ingest": "VALUE_CONVERTER", "landing": "TASK_PUT", "landing_decode": "VALUE_CONVERTER"}
LANDING_DECODE_REASONS = frozenset({"not_decodable", "unknown_schema"})

Headers = list[tuple[str, bytes]]


def refused(
    reason: str,
    message: str,
    *,
    stage: str | None = None,
    keep: Iterable[tuple[str, bytes]] = (),
    origin: tuple[str, int, int] | None = None,
) -> Headers:
    """Headers of a dead letter: `keep` (a refused record's own headers) without any earlier verdict, then this one.

    `origin`: the refused Kafka record's (topic, partition, offset), for Connect's headers.
    """
    ours = (REASON, MESSAGE, STAGE)
    headers = [h for h in keep if h[0] not in ours and not h[0].startswith("__connect.errors.")]
    headers += [(REASON, reason.encode()), (MESSAGE, message.encode())]
    if stage is not None:
        headers.append((STAGE, stage.encode()))
    connect_stage = "ingest" if stage is None else stage
    if stage == "landing" and reason in LANDING_DECODE_REASONS:
        connect_stage = "landing_decode"
    headers += [
        (CONNECT_STAGE, CONNECT_STAGES.get(connect_stage, "TASK_PUT").encode()),
        (CONNECT_EXCEPTION_MESSAGE, f"{reason}: {message}".encode()),
        (CONNECT_CONNECTOR, b"hub-ingest" if stage is None else b"hub-land"),
    ]
    if origin is not None:
        topic, partition, offset = origin
        headers += [
            (CONNECT_TOPIC, topic.encode()),
            (CONNECT_PARTITION, str(partition).encode()),
            (CONNECT_OFFSET, str(offset).encode()),
        ]
    return headers
