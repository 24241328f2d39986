"""A landing worker's partition positions, driven without a broker: what it may land, and from where."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from hub.landing.positions import Gap, Positions
from hub.landing.writer import OffsetMove

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


@dataclass
class Record:
    offset: int


def records(*offsets: int) -> list[Record]:
    return [Record(o) for o in offsets]


def no_highwater(_tp: TopicPartition) -> int | None:
    return None


def positioned(stored: dict[TopicPartition, int]) -> Positions:
    p = Positions()
    p.assign(stored)
    p.position(sorted(stored), {(tp.topic, tp.partition): o for tp, o in stored.items()}, set(stored))
    return p


def test_an_assigned_partition_is_pending_until_positioned_at_its_stored_offset() -> None:
    p = Positions()
    p.assign([A0, A1])
    assert p.pending == {A0, A1} and p.expected == {}
    seeks = p.position([A0, A1], {("a", 0): 7, ("a", 1): 0}, {A0, A1})
    assert seeks == [(A0, 7), (A1, 0)]
    assert p.pending == set() and p.expected == {A0: 7, A1: 0}


def test_a_partition_revoked_while_its_offsets_were_read_is_not_positioned() -> None:
    p = Positions()
    p.assign([A0, A1])
    assert p.position([A0, A1], {("a", 0): 3, ("a", 1): 4}, {A0}) == [(A0, 3)]
    assert p.expected == {A0: 3} and p.pending == set()


def test_a_batch_moves_each_partition_from_the_expected_offset_to_after_its_last_record() -> None:
    p = positioned({A0: 10, B0: 0})
    highwater = {A0: 20, B0: 3}
    moves = p.moves({A0: records(10, 11, 12), B0: records(0, 1, 2)}, highwater.get)
    assert moves == {("a", 0): OffsetMove(10, 13, 20), ("b", 0): OffsetMove(0, 3, 3)}
    p.landed([A0, B0], stored={("a", 0)}, moves=moves)  # b's offset was fenced: it did not move
    assert p.expected == {A0: 13, B0: 0}


def test_anything_that_positions_partitions_invalidates_batches_fetched_before_it() -> None:
    p = positioned({A0: 0, A1: 0})
    for change in (
        lambda: p.revoke([A1]),
        lambda: p.fence(A0),
        lambda: p.repend_all(),
        lambda: p.repend_topics({"a"}),
        lambda: p.follow(A0, 0),
        lambda: p.clear(),
    ):
        before = p.generation
        change()
        assert p.generation > before


def test_a_fenced_partition_is_positioned_again_before_the_next_fetch() -> None:
    p = positioned({A0: 5})
    assert p.fence(A0)
    assert p.pending == {A0} and A0 not in p.expected
    assert not p.fence(B0), "a partition this worker does not own is not fenced"


def test_only_positioned_partitions_of_a_fetch_are_kept() -> None:
    p = positioned({A0: 0})
    p.assign([A1])
    assert p.kept({A0: records(0), A1: records(0)}) == {A0: records(0)}


def test_a_log_shorter_than_the_stored_offset_and_a_gap_are_told_apart() -> None:
    p = positioned({A0: 50, A1: 10, B0: 0})
    highwater = {A0: 20, A1: 30, B0: 5}
    found = p.check({A1: records(15, 16), B0: records(0)}, highwater.get)
    assert found.shorter == [A0]  # recreated or a broker that lost its log
    assert found.gaps == [Gap(A1, 10, 5)]  # offsets 10..14 are not in the log any more


def test_a_topic_is_behind_while_a_fetch_saw_more_than_was_landed_or_a_partition_is_pending() -> None:
    p = positioned({A0: 10, B0: 4})
    assert p.behind({A0: 12, B0: 4}.get) == {"a"}
    p.assign([TopicPartition("c", 0)])
    assert p.behind(no_highwater) == {"c"}


def test_recreated_topics_send_only_their_partitions_back_to_pending() -> None:
    p = positioned({A0: 9, A1: 9, B0: 9})
    p.repend_topics({"a"})
    assert p.pending == {A0, A1} and p.expected == {B0: 9}


def test_revoking_forgets_a_partition_entirely() -> None:
    p = positioned({A0: 1, B0: 2})
    p.revoke([A0])
    assert p.assigned == {B0} and p.expected == {B0: 2} and A0 not in p.pending
