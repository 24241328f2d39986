"""The live share streams agreements ask for: one per (agreement, consumer, clause) with `kafka` or `mqtt` delivery.

Whether a stream runs is the policy's answer (`policy.decide`), asked for the consumer, the feed and
the clause's form at the moment: the same decision `hub explain` prints and the SQL views enforce.
A stream of an agreement with everyone is named for `open_data` and decided for its provider (open
data is for every organisation, the provider included). Pure: the share workers (hub/share/), `hub
access` and `hub apply` (consumer logins) all read streams from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from hub.agreement import names
from hub.agreement.grants import AgreementState, Clause
from hub.agreement.model import Delivery
from hub.agreement.policy import Question, World, decide

STREAM_DELIVERIES = (str(Delivery.kafka), str(Delivery.mqtt))


@dataclass(frozen=True)
class Stream:
    agreement: AgreementState
    org: str | None  # the consumer organisation; None: everyone (open data)
    clause: Clause

    @property
    def id(self) -> str:
        """Stable across reloads: agreement, consumer and clause."""
        return f"{self.agreement.id}/{self.consumer}/{self.clause.index}"

    @property
    def consumer(self) -> str:
        return names.stream_consumer(self.org)

    @property
    def kafka(self) -> bool:
        return str(Delivery.kafka) in self.agreement.delivery

    @property
    def mqtt(self) -> bool:
        return str(Delivery.mqtt) in self.agreement.delivery

    @property
    def topic(self) -> str:
        c = self.clause
        return names.share_topic(self.org, c.provider, c.feed, c.aggregate)

    @property
    def subject(self) -> str:
        return names.share_subject(self.topic)

    @property
    def mqtt_prefix(self) -> str:
        c = self.clause
        return names.share_mqtt_prefix(self.org, c.provider, c.feed, c.aggregate)

    @property
    def lane(self) -> str:
        """Raw streams with the same delay read a feed topic together, at one stored position (hub/share/)."""
        return lane_name(self.clause.delay)

    def to_json(self) -> dict[str, object]:
        return {
            "agreement": self.agreement.id,
            "clause": f"grants[{self.clause.index}]",
            "feed": self.clause.feed_key,
            "form": str(self.clause.form),
            "kafka_topic": self.topic if self.kafka else None,
            "kafka_subject": self.subject if self.kafka else None,
            "mqtt_topic": (self.mqtt_prefix + ("" if self.clause.aggregate else "/+")) if self.mqtt else None,
        }


def lane_name(delay: timedelta) -> str:
    seconds = int(delay.total_seconds())
    return "now" if seconds <= 0 else f"delay-{seconds}s"


def lane_delay(lane: str) -> timedelta:
    return timedelta(0) if lane == "now" else timedelta(seconds=int(lane.removeprefix("delay-").removesuffix("s")))


def wanted(world: World) -> list[Stream]:
    """Every stream the agreements ask for, in force or not (revoked, expired or not started yet)."""
    out = []
    for a in world.agreements:
        if not any(d in a.delivery for d in STREAM_DELIVERIES):
            continue
        for org in a.grantees():
            out += [Stream(a, org, c) for c in a.clauses]
    return out


def in_force(stream: Stream, world: World, at: datetime) -> bool:
    """The policy's answer: does the consumer read this clause of this agreement at `at`?"""
    a, c = stream.agreement, stream.clause
    asker = stream.org if stream.org is not None else a.provider
    decision = decide(Question(asker, c.feed_key, at, form=c.form), world)
    return any(
        g.agreement is not None and g.agreement.id == a.id and g.clause.index == c.index for g in decision.grants
    )


def active(world: World, at: datetime) -> list[Stream]:
    """The streams that run at `at`."""
    return [s for s in wanted(world) if in_force(s, world, at)]


def of_org(streams: Iterable[Stream], org: str) -> list[Stream]:
    """The streams `org` reads: its own, and open data."""
    return [s for s in streams if s.org is None or s.org == org]


def mqtt_consumers(streams: Iterable[Stream]) -> list[str]:
    """Organisations that read some stream over MQTT (open data: none by itself)."""
    return sorted({s.org for s in streams if s.mqtt and s.org is not None})
