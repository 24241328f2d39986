"""Where each partition a landing worker owns stands: pure state, driven by the worker and by tests without a broker.

A partition is either *pending* (assigned, not yet positioned at its stored offset) or
*positioned*: the worker knows the stored offset it continues from (`expected`). Landing a
batch moves a partition's expected offset to the batch's end once the database stored it;
anything else that positions partitions (an assignment, a revocation, a fence, a broker
reset, a recreated topic) bumps `generation`, so a batch fetched before it is fetched again
rather than written (the Quix Streams sink keeps its batches per partition in the same spirit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from hub.landing.writer import OffsetMove, TopicPartitionKey

Highwater = Callable[[TopicPartition], int | None]  # the consumer's view of a partition's log end


class Gap(NamedTuple):
    tp: TopicPartition
    first_missing: int
    records: int


@dataclass(frozen=True)
class Check:
    """What a fetch showed about the logs: partitions whose log is shorter than the stored offset, and gaps."""

    shorter: list[TopicPartition] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)


@dataclass
class Positions:
    assigned: set[TopicPartition] = field(default_factory=set)
    expected: dict[TopicPartition, int] = field(default_factory=dict)  # stored offset this worker continues from
    pending: set[TopicPartition] = field(default_factory=set)  # assigned, not yet positioned
    generation: int = 0  # bumped whenever partitions are positioned other than by landing a batch

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        tps = set(tps)
        self.assigned |= tps
        self.pending |= tps

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        self.generation += 1
        for tp in tps:
            self.assigned.discard(tp)
            self.expected.pop(tp, None)
            self.pending.discard(tp)

    def clear(self) -> None:
        """The consumer is gone: nothing is assigned any more."""
        self.assigned.clear()
        self.expected.clear()
        self.pending.clear()
        self.generation += 1

    def position(
        self, tps: Sequence[TopicPartition], stored: Mapping[TopicPartitionKey, int], assignment: set[TopicPartition]
    ) -> list[tuple[TopicPartition, int]]:
        """Position pending partitions `tps` at their `stored` offsets; returns the seeks to make.

        One no longer in the consumer's `assignment` is dropped from pending.
        """
        self.generation += 1
        seeks = []
        for tp in tps:
            self.pending.discard(tp)
            if tp not in assignment:
                continue
            offset = stored[(tp.topic, tp.partition)]
            self.expected[tp] = offset
            seeks.append((tp, offset))
        return seeks

    def follow(self, tp: TopicPartition, offset: int) -> None:
        """Someone stored another offset for `tp` (set back after a recreated topic): continue from there."""
        self.generation += 1
        self.expected[tp] = offset

    def repend(self, tps: Iterable[TopicPartition]) -> None:
        """Position these partitions again from their stored offsets before the next fetch."""
        self.generation += 1
        for tp in list(tps):
            if tp in self.expected:
                del self.expected[tp]
                self.pending.add(tp)

    def repend_all(self) -> None:
        """The stored offsets were all set back (the broker lost its log)."""
        self.repend(list(self.expected))

    def repend_topics(self, topics: set[str]) -> None:
        """These topics were recreated (their stored offsets are 0 now)."""
        self.repend([tp for tp in self.expected if tp.topic in topics])

    def kept(self, data: Mapping[TopicPartition, Any]) -> dict[TopicPartition, Any]:
        """The part of a fetched batch whose partitions are still positioned here."""
        return {tp: records for tp, records in data.items() if tp in self.expected}

    def moves(
        self, data: Mapping[TopicPartition, Sequence[Any]], highwater: Highwater
    ) -> dict[TopicPartitionKey, OffsetMove]:
        """Each partition's offset move for a batch: from the expected offset to after its last record."""
        return {
            (tp.topic, tp.partition): OffsetMove(self.expected[tp], records[-1].offset + 1, highwater(tp))
            for tp, records in data.items()
        }

    def landed(
        self, tps: Iterable[TopicPartition], stored: set[TopicPartitionKey], moves: dict[Any, OffsetMove]
    ) -> None:
        """The database stored these partitions' moves: continue from where the batch ended."""
        for tp in tps:
            key = (tp.topic, tp.partition)
            if key in stored and tp in self.expected:
                self.expected[tp] = moves[key].next

    def fence(self, tp: TopicPartition) -> bool:
        """Another worker (or a reset) moved `tp`'s stored offset: position it again. False if it is not ours."""
        if tp not in self.expected:
            return False
        self.repend([tp])
        return True

    def check(self, data: Mapping[TopicPartition, Sequence[Any]], highwater: Highwater) -> Check:
        """Logs shorter than the stored offset (topic recreated, broker restarted), and offsets absent from a log."""
        out = Check()
        for tp, expected in self.expected.items():
            hw = highwater(tp)
            records = data.get(tp)
            first = records[0].offset if records else None
            if (hw is not None and hw < expected) or (first is not None and first < expected):
                out.shorter.append(tp)
            elif first is not None and first > expected:
                out.gaps.append(Gap(tp, expected, first - expected))
        return out

    def behind(self, highwater: Highwater) -> set[str]:
        """Topics this worker knows it has not landed to the end of (its last fetch saw more)."""
        topics = {tp.topic for tp in self.pending}
        for tp, expected in self.expected.items():
            hw = highwater(tp)
            if hw is not None and expected < hw:
                topics.add(tp.topic)
        return topics
