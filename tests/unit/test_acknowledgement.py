"""When ingest may acknowledge: the wait for landing and what is recorded with an acknowledgement (pure parts)."""

from __future__ import annotations

from collections import Counter

from hub.ingest import ack_latency
from hub.ingest.ack_ledger import Landed, Released, needs_round_trip, release_args
from hub.ingest.landed_acks import LandedAcks, Waiting
from hub.ingest.mqtt_source import Message
from hub.ingest.outgoing import Outgoing, mark_resent

FEED, DEAD = "hub.p.f", "hub.dead-letter"


def record(offset: int, partition: int = 0, topic: str = FEED, refused: tuple[str, str, str] | None = None) -> Outgoing:
    o = Outgoing(topic, partition, b"k", b"v", [], refused)
    o.offset = offset
    return o


def message(mid: int, generation: int = 1) -> Message:
    return Message("partners/p/x", b"{}", mid, 1_000, generation)


def waiting(
    records: list[Outgoing], epoch: str = "e1", baseline: dict[tuple[str, int], tuple[int, int]] | None = None
) -> Waiting:
    return Waiting.of([message(i) for i in range(len(records))], records, {FEED}, Released(epoch, [], baseline or {}))


def test_a_batch_is_landed_once_every_partition_is_stored_beyond_its_last_record() -> None:
    w = waiting([record(10, 0), record(11, 0), record(4, 1)])
    assert w.needs == {(FEED, 0): (12, 0), (FEED, 1): (5, 0)}
    assert w.state(Landed("e1", {(FEED, 0): (12, 0), (FEED, 1): (4, 0)})) == "waiting"
    assert w.state(Landed("e1", {(FEED, 0): (12, 0), (FEED, 1): (5, 0)})) == "landed"
    assert w.state(Landed("e1", {(FEED, 0): (12, 0)})) == "waiting", "a partition landing has not seen yet"


def test_a_new_epoch_or_generation_makes_the_batch_stale_and_a_resend_waits_afresh() -> None:
    w = waiting([record(10)])
    assert w.state(Landed("e2", {(FEED, 0): (50, 0)})) == "stale", "the broker lost its log: offsets of another log"
    assert w.state(Landed("e1", {(FEED, 0): (50, 1)})) == "stale", "the log was found shorter"
    w.records[0].offset = 3
    w.rebase(Released("e2", [], {(FEED, 0): (0, 1)}))
    assert w.state(Landed("e2", {(FEED, 0): (4, 1)})) == "landed"


def test_a_topic_recreated_to_free_memory_keeps_landed_positions_valid() -> None:
    # Sent at offset 10 of a log whose earlier incarnations held 1,000 records: position 1,011 must be passed.
    w = waiting([record(10)], baseline={(FEED, 0): (1_000, 0)})
    assert w.state(Landed("e1", {(FEED, 0): (1_010, 0)})) == "waiting"
    # Landing landed it, then recreated the topic: base 1,011, next offset 0.
    assert w.state(Landed("e1", {(FEED, 0): (1_011, 0)})) == "landed"


def test_batches_are_acknowledged_in_the_order_they_arrived_and_dead_letters_wait_their_turn() -> None:
    acks = LandedAcks()
    first, only_dead, third = waiting([record(5)]), waiting([record(0, topic=DEAD)]), waiting([record(1, 1)])
    for w in (first, only_dead, third):
        acks.add(w)
    assert only_dead.needs == {}, "dead letters are not landed (yet): Kafka's acknowledgement holds for them"
    ready, stale = acks.check(Landed("e1", {(FEED, 0): (3, 0), (FEED, 1): (2, 0)}))
    assert (ready, stale) == (0, []), "the third has landed, but the first has not"
    ready, stale = acks.check(Landed("e1", {(FEED, 0): (6, 0), (FEED, 1): (2, 0)}))
    assert ready == 3 and acks.pop(ready) == [first, only_dead, third] and not acks.pending


def test_batches_of_an_earlier_mqtt_connection_are_dropped_the_broker_delivers_them_again() -> None:
    acks = LandedAcks()
    old = Waiting.of([message(1, generation=1)], [record(1)], {FEED}, Released("e1", [], {}))
    new = Waiting.of([message(1, generation=2)], [record(2)], {FEED}, Released("e1", [], {}))
    acks.add(old)
    acks.add(new)
    assert acks.drop_older(2) == 1 and list(acks.pending) == [new]


def test_the_release_records_ranges_per_contiguous_run_and_counters_per_reason_only_in_kafka_mode() -> None:
    batch = [record(7), record(8), record(9), record(20), record(3, 2), record(0, topic=DEAD, refused=("p", "f", "x"))]
    batch.append(record(1, topic=DEAD, refused=("p", "f", "x")))
    args = release_args([FEED], "e1", True, batch, {FEED}, record=True)
    topics, epoch, rt, rp, rf, rn, partners, feeds, reasons, counts, bt, bp, confirmed = args
    assert (topics, epoch, confirmed) == ([FEED], "e1", True)
    assert list(zip(rt, rp, rf, rn, strict=True)) == [(FEED, 0, 7, 10), (FEED, 0, 20, 21), (FEED, 2, 3, 4)]
    assert (partners, feeds, reasons, counts) == (["p"], ["f"], ["x"], [2])
    assert (bt, bp) == ([], [])
    landed_mode = release_args([FEED], "e1", True, batch, {FEED}, record=False)
    assert landed_mode[2] == [] and landed_mode[6] == [], "nothing recorded: the PUBACK waits for landing"
    assert sorted(zip(landed_mode[10], landed_mode[11], strict=True)) == [(FEED, 0), (FEED, 2)]
    assert not needs_round_trip(release_args([], "e1", True, [record(0, topic=DEAD)], {FEED}, record=False))


def test_a_record_sent_again_is_marked_once_as_the_hubs_own_copy() -> None:
    o = record(1)
    mark_resent([o])
    mark_resent([o])
    assert o.headers == [("redelivery", b"resend")]


def test_puback_latencies_are_counted_in_buckets_and_read_back_as_percentiles() -> None:
    latency = ack_latency.AckLatency()
    latency.record([1_000] * 99 + [1_000 - 2_000], now_ms=1_010)
    merged = ack_latency.parse(latency.as_json())
    assert sum(merged.values()) == 100
    assert 10 <= ack_latency.percentile(merged, 50) < 11.1
    assert 2_010 <= ack_latency.percentile(merged, 100) < 2_220
    assert ack_latency.percentile(Counter(), 50) != ack_latency.percentile(Counter(), 50), "NaN without data"
