"""Acknowledging after landing (`HUB_INGEST_ACK=landed`): batches wait, in order, until landing stored them.

Kafka's acknowledgement is durable on Apache Kafka with replicated logs, but not on the local
stack's broker, which keeps its log in memory: a restart loses what it acknowledged and landing
had not landed yet. In `landed` mode an ingest worker therefore PUBACKs a message only once every
record of its batch is at or below its partition's stored offset in `hub.land_offsets`, which
landing writes in the transaction that commits the rows (the durable point). Until then the MQTT
broker keeps the message for the worker's session: a worker that dies gets it again.

Pipelined: a batch, once Kafka acknowledged it, waits here while the next ones are sent; the
worker polls the stored offsets (`ack_ledger.POLL_SQL`, one small query every
`ingest_landed_poll_ms` while anything waits) and PUBACKs the batches at the head that landed, in
the order they were received. The MQTT broker's in-flight window for the session
(`max_inflight_messages`, `HUB_INGEST_MAX_IN_FLIGHT` on the local stack) bounds what waits.

Offsets are compared as landed positions (`base_offset + offset`, see ack_ledger.py): landing
recreating a fully landed topic keeps them valid. A batch is *stale* when the broker epoch
changed or its partition's generation moved on (the broker lost its log, a log was found
shorter): its records may be gone, so they are sent again (landing is idempotent and counts such
a copy, when the first one had landed, as `redelivered`). The wait is over (topic, partition,
offset), so any topic landing stores offsets for can be waited on the same way.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from hub.ingest.ack_ledger import Landed, Released, TopicPartitionKey, refused_counts
from hub.ingest.mqtt_source import Message
from hub.ingest.outgoing import Outgoing
from hub.kafka import is_local_broker
from hub.settings import Endpoints, HubSettings

AckMode = Literal["kafka", "landed"]


def ack_mode(settings: HubSettings, endpoints: Endpoints) -> AckMode:
    """`landed` where the Kafka broker is not durable (the local stack's, memory only), else `kafka`, unless set."""
    if settings.ingest_ack != "auto":
        return settings.ingest_ack
    return "landed" if is_local_broker(settings, endpoints.kafka_bootstrap) else "kafka"


@dataclass
class Waiting:
    """One batch whose messages wait for their records to land."""

    messages: list[Message]
    records: list[Outgoing]  # the records landing lands (not dead letters): sent again if their log is lost
    refused: Counter[tuple[str, str, str]]  # counters recorded with the PUBACK
    epoch: str | None = None
    # (topic, partition) -> (the landed position that must be passed, generation at the send)
    needs: dict[TopicPartitionKey, tuple[int, int]] = field(default_factory=dict)
    resending: bool = False  # handed to the step loop to be sent again

    @classmethod
    def of(
        cls,
        messages: list[Message],
        outgoing: list[Outgoing],
        landed_topics: set[str],
        released: Released,
        counts: Counter[tuple[str, str, str]] | None = None,
    ) -> Waiting:
        """`counts`: messages of the batch acknowledged without a record, counted with the PUBACK."""
        refused = refused_counts(outgoing) + (counts or Counter())
        w = cls(messages, [o for o in outgoing if o.topic in landed_topics], refused)
        w.rebase(released)
        return w

    def rebase(self, released: Released) -> None:
        """The records were (sent again and) acknowledged: what they need from landing now."""
        self.epoch = released.epoch
        ends: dict[TopicPartitionKey, int] = {}
        for o in self.records:
            key = (o.topic, o.partition)
            ends[key] = max(ends.get(key, 0), o.offset + 1)
        self.needs = {}
        for key, end in ends.items():
            base, generation = released.baseline.get(key, (0, 0))
            self.needs[key] = (base + end, generation)

    def state(self, landed: Landed) -> Literal["landed", "waiting", "stale"]:
        if not self.needs:
            return "landed"
        if self.epoch is not None and landed.epoch != self.epoch:  # None: epochs are not checked
            return "stale" if landed.epoch is not None else "waiting"
        waiting = False
        for key, (need, generation) in self.needs.items():
            position, now = landed.positions.get(key, (0, 0))
            if now != generation:
                return "stale"
            if position < need:
                waiting = True
        return "waiting" if waiting else "landed"


class LandedAcks:
    """The batches waiting for landing, oldest first; pure, so tests can drive it without servers."""

    def __init__(self) -> None:
        self.pending: deque[Waiting] = deque()
        self.last_progress = time.monotonic()

    def add(self, waiting: Waiting) -> None:
        self.pending.append(waiting)

    @property
    def messages(self) -> int:
        return sum(len(w.messages) for w in self.pending)

    def topics(self) -> list[str]:
        return sorted({t for w in self.pending for t, _ in w.needs})

    def check(self, landed: Landed) -> tuple[int, list[Waiting]]:
        """(how many batches at the head have landed, the batches to send again)."""
        ready = 0
        head = True
        stale: list[Waiting] = []
        for w in self.pending:
            state = w.state(landed)
            if state == "stale":
                stale.append(w)
            if state == "landed" and head:
                ready += 1
            else:
                head = False
        return ready, stale

    def pop(self, n: int) -> list[Waiting]:
        if n:
            self.last_progress = time.monotonic()
        return [self.pending.popleft() for _ in range(n)]

    def drop_older(self, generation: int) -> int:
        """Forget batches received on an earlier MQTT connection: the broker delivers them again. Returns how many."""
        kept = deque(w for w in self.pending if any(m.generation == generation for m in w.messages))
        dropped = len(self.pending) - len(kept)
        self.pending = kept
        return dropped
