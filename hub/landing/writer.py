"""One database transaction per batch: rows, Kafka offsets, counters and dead letters commit together.

Rows are COPied straight into the feed table, in a savepoint; when a row is there already
(a record delivered again) the savepoint rolls back and the batch takes the staging path
(staging.py): COPY into a temporary staging table, insert what the table lacks, and compare
every other record with the row already landed, so a record delivered twice lands once and a
second, different reading for the same `(device_id, time)` is refused as `duplicate_key`. The
direct COPY costs the database about half as much per row, and records meet landed rows only
after a crash, a redelivery or a repeated key; a table whose last batch met rows already landed
takes the staging path directly (`TableBatch.copy_first`) until a batch of it meets none. The
next offset of each partition is stored in the same transaction (`hub.land_offsets`), so after
any crash the worker resumes exactly where the table is: no loss, no duplicate.

Offsets are fenced: a worker stores a partition's offset only if the stored one is still
the one it started the batch from (`OffsetMove.expected`), read under a row lock, and only
if the broker epoch it fetched under is still the current one (`hub.land_broker`). Only the
records of partitions whose offsets move are landed: a worker that lost the partition in a
rebalance leaves them to the new owner, and records fetched from a broker that has since lost
its log are either sent again by ingest (nothing was acknowledged before they landed) or
counted as lost (hub/landing/lost.py); landing them here would count them twice.

A row the database refuses (a NUL character in text, a value out of the column's range)
goes to the dead-letter topic, sent before the commit, instead of blocking its partition;
so does a `duplicate_key` record. What became of every record besides a row is counted in
`hub.land_outcomes` in the same transaction (duplicates, redeliveries, each dead letter's reason).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from hub.identifiers import qualified
from hub.landing import dead_letter_rows
from hub.landing.rows import FeedRows, Rejected
from hub.landing.staging import REFUSED_BY_CLIENT, REFUSED_ROW, land_staged
from hub.schema.timestamps import MAX_EPOCH_US, MIN_EPOCH_US

TopicPartitionKey = tuple[str, int]

# timestamptz on the wire: int64 microseconds since 2000-01-01 UTC; these two mean +/-infinity.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_UNIX_US = 946_684_800_000_000
_PG_INFINITY = 0x7FFFFFFFFFFFFFFF
_PG_NEGATIVE_INFINITY = -0x8000000000000000
# asyncpg's stand-ins for them (naive, as asyncpg returns and accepts them).
_INFINITY = datetime(9999, 12, 31, 23, 59, 59, 999999)
_NEGATIVE_INFINITY = datetime(1, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_ZERO = timedelta(0)


def _encode_timestamptz(value: Any) -> tuple[int]:
    """asyncpg's 'tuple' format of timestamptz, which is (microseconds since 2000-01-01 UTC,).

    An int is microseconds since the Unix epoch (`RowBuilder`'s timestamps); a datetime or a date
    is taken as asyncpg's own codec takes it (naive means local time; datetime.max/min, naive,
    are infinity).
    """
    if type(value) is int:
        if MIN_EPOCH_US < value < MAX_EPOCH_US:
            return (value - _PG_EPOCH_UNIX_US,)
        # asyncpg's codec sends datetime.max/min (even UTC-aware, as fastavro made them) as infinity.
        return (
            (_PG_INFINITY,)
            if value == MAX_EPOCH_US
            else (_PG_NEGATIVE_INFINITY,)
            if value == MIN_EPOCH_US
            else (value - _PG_EPOCH_UNIX_US,)
        )
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise TypeError(f"expected a datetime.date or datetime.datetime instance, got {type(value).__name__!r}")
        value = datetime(value.year, value.month, value.day).astimezone()
    elif (value.year == 9999 or value.year == 1) and (value.tzinfo is None or value.utcoffset() == _ZERO):
        plain = value.replace(tzinfo=None)
        if plain == _INFINITY:
            return (_PG_INFINITY,)
        if plain == _NEGATIVE_INFINITY:
            return (_PG_NEGATIVE_INFINITY,)
    if value.tzinfo is None:
        value = value.astimezone()
    return ((value - _PG_EPOCH) // _MICROSECOND,)


def _decode_timestamptz(value: tuple[int]) -> datetime:
    """What asyncpg's own codec returns: an aware datetime in UTC (naive datetime.max/min for infinity)."""
    us = value[0]
    if us == _PG_INFINITY:
        return _INFINITY
    if us == _PG_NEGATIVE_INFINITY:
        return _NEGATIVE_INFINITY
    return _PG_EPOCH + timedelta(0, 0, us)


async def use_epoch_timestamps(conn: asyncpg.Connection) -> None:
    """Let timestamptz parameters be ints of microseconds since the Unix epoch, as well as datetimes.

    `RowBuilder` hands timestamps as such ints: COPY then needs no datetime per value (the
    landing worker's hottest path). Reading timestamptz still gives the datetimes asyncpg gives.
    For the `init` of the landing pool's connections.
    """
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamptz,
        decoder=_decode_timestamptz,
        format="tuple",
    )


@dataclass
class TableBatch:
    partner_id: str
    feed: str
    schema: str
    table: str
    rows: FeedRows
    signature: str = ""  # the table's column types as last read: part of the staging table's name
    copy_first: bool = True  # try COPY straight into the table before the staging path


@dataclass(frozen=True)
class OffsetMove:
    expected: int  # the stored offset the batch starts from, as this worker knows it
    next: int  # the offset after the batch's last record
    log_end: int | None = None  # the partition's log end (high watermark) as the fetch reported it


@dataclass
class WriteResult:
    inserted: int = 0
    duplicates: int = 0  # identical to the landed row: a device sent it twice
    redelivered: int = 0  # identical to the landed row: the hub's own copy (MQTT redelivery, resend)
    refused: list[Rejected] = field(default_factory=list)  # by the database
    conflicts: list[Rejected] = field(default_factory=list)  # duplicate_key
    dead_lettered: int = 0
    dead_letters_stored: int = 0  # records of the dead-letter topic written to hub.dead_letters
    letters: list[tuple[str, str, Rejected]] = field(default_factory=list)  # (partner, feed, dead letter) sent
    met_landed: set[tuple[str, str]] = field(default_factory=set)  # (schema, table)s with rows already there
    stored: set[TopicPartitionKey] = field(default_factory=set)  # partitions whose offsets moved
    fenced: dict[TopicPartitionKey, int | None] = field(default_factory=dict)  # partition -> offset found instead
    epoch_changed: bool = False
    rows_by_feed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (partner, feed) -> rows inserted
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (partner, feed, outcome) -> records


DeadLetter = Callable[[list[Rejected]], Awaitable[None]]


async def write_batch(
    conn: asyncpg.Connection,
    batches: list[TableBatch],
    moves: dict[TopicPartitionKey, OffsetMove],
    rejected_early: list[Rejected],
    dead_letter: DeadLetter,
    epoch: str | None = None,
    feed_of: Mapping[str, tuple[str, str]] | None = None,
    dead_letters: Sequence[tuple[TopicPartitionKey, dead_letter_rows.Row]] = (),
) -> WriteResult:
    """Write every table batch, the offsets that may move, and their dead letters, in one transaction.

    `rejected_early` are records that never became rows (not decodable, unknown schema);
    they, the rows the database refuses and `duplicate_key` records are dead-lettered before
    the commit, for the partitions whose offsets this transaction moves, so they are in the
    dead-letter topic before their offsets are stored. `feed_of`: topic -> (partner, feed),
    to count early dead letters under their feed. `dead_letters` are records of the dead-letter topic
    itself: stored in `hub.dead_letters` for the partitions whose offsets move, so exactly once.
    """
    feed_of = feed_of or {}
    result = WriteResult()
    async with conn.transaction():
        may_store = True
        if epoch is not None:
            current = await conn.fetchval("SELECT epoch FROM hub.land_broker FOR SHARE")
            if current != epoch:
                result.epoch_changed, may_store = True, False
        keys = sorted(moves)
        stored = await _lock_offsets(conn, keys)
        moving: dict[TopicPartitionKey, OffsetMove] = {}
        for key in keys:
            if may_store and stored.get(key) == moves[key].expected:
                moving[key] = moves[key]
            else:
                result.fenced[key] = stored.get(key)
        outcomes: Counter[tuple[str, str, str]] = Counter()
        for b in sorted(batches, key=lambda b: (b.schema, b.table)):  # one lock order: no deadlock between workers
            b = _only(b, set(moving))
            if not b.rows.rows:
                continue
            before = (len(result.refused), len(result.conflicts), result.duplicates, result.redelivered)
            inserted = await _insert(conn, b, result)
            result.inserted += inserted
            result.rows_by_feed[(b.partner_id, b.feed)] += inserted
            outcomes[(b.partner_id, b.feed, "duplicate")] += result.duplicates - before[2]
            outcomes[(b.partner_id, b.feed, "redelivered")] += result.redelivered - before[3]
            letters = [*result.refused[before[0] :], *result.conflicts[before[1] :]]
            result.letters += [(b.partner_id, b.feed, r) for r in letters]
            await conn.execute(
                """INSERT INTO hub.land_counters (partner_id, feed, kafka_partition, rows) VALUES ($1, $2, -1, $3)
                   ON CONFLICT (partner_id, feed, kafka_partition)
                   DO UPDATE SET rows = hub.land_counters.rows + $3""",
                b.partner_id,
                b.feed,
                inserted,
            )
        if moving:
            await conn.executemany(
                """INSERT INTO hub.land_offsets (topic, kafka_partition, next_offset, log_end) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (topic, kafka_partition)
                   DO UPDATE SET next_offset = $3, log_end = $4, updated_at = now()""",
                [(t, p, m.next, m.log_end) for (t, p), m in moving.items()],
            )
        result.stored = set(moving)
        result.dead_letters_stored = await dead_letter_rows.store(
            conn, (row for key, row in dead_letters if key in moving)
        )
        early = [r for r in rejected_early if (r.topic, r.partition) in moving]
        result.letters += [(*feed_of.get(r.topic, ("_unknown", r.topic)), r) for r in early]
        for partner, feed, r in result.letters:
            outcomes[(partner, feed, r.reason)] += 1
        if result.letters:
            await dead_letter([r for _p, _f, r in result.letters])
            result.dead_lettered = len(result.letters)
        await _count_outcomes(conn, outcomes)
    result.outcomes = outcomes
    return result


def _only(b: TableBatch, partitions: set[TopicPartitionKey]) -> TableBatch:
    """The batch without the records of partitions whose offsets do not move (almost always: all of it)."""
    rows = b.rows
    if all((s.topic, s.partition) in partitions for s in rows.sources):
        return b
    keep = [i for i, s in enumerate(rows.sources) if (s.topic, s.partition) in partitions]
    kept = FeedRows(rows.columns, [rows.rows[i] for i in keep], [rows.sources[i] for i in keep], rows.rejected)
    return replace(b, rows=kept)


async def _count_outcomes(conn: asyncpg.Connection, outcomes: Counter[tuple[str, str, str]]) -> None:
    counted = sorted((k, n) for k, n in outcomes.items() if n)
    if not counted:
        return
    await conn.execute(
        """INSERT INTO hub.land_outcomes (partner_id, feed, outcome, records)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
           ON CONFLICT (partner_id, feed, outcome)
           DO UPDATE SET records = hub.land_outcomes.records + excluded.records, last_at = now()""",
        [k[0] for k, _ in counted],
        [k[1] for k, _ in counted],
        [k[2] for k, _ in counted],
        [n for _, n in counted],
    )


async def _lock_offsets(conn: asyncpg.Connection, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT o.topic, o.kafka_partition, o.next_offset FROM hub.land_offsets o
           JOIN unnest($1::text[], $2::int[]) AS k(topic, kafka_partition)
             ON k.topic = o.topic AND k.kafka_partition = o.kafka_partition
           ORDER BY o.topic, o.kafka_partition
           FOR UPDATE OF o""",
        [t for t, _ in keys],
        [p for _, p in keys],
    )
    return {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}


async def _insert(conn: asyncpg.Connection, b: TableBatch, result: WriteResult) -> int:
    if b.copy_first:
        try:
            async with conn.transaction():  # a savepoint: a row already there must not abort the batch
                status = await conn.copy_records_to_table(
                    b.table, schema_name=b.schema, records=b.rows.rows, columns=b.rows.columns
                )
                return int(status.split()[-1])
        except (*REFUSED_ROW, *REFUSED_BY_CLIENT):
            pass  # a row already landed, or one the database refuses: the staging path sorts them out
    staged = await land_staged(conn, b, qualified(b.schema, b.table))
    result.duplicates += staged.duplicates
    result.redelivered += staged.redelivered
    result.refused += staged.refused
    result.conflicts += staged.conflicts
    if staged.inserted < len(b.rows.rows):
        result.met_landed.add((b.schema, b.table))
    return staged.inserted


async def ensure_offsets(conn: asyncpg.Connection, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    """The stored next offset of each partition, creating a row at 0 for a partition never landed."""
    if not keys:
        return {}
    await conn.execute(
        """INSERT INTO hub.land_offsets (topic, kafka_partition, next_offset)
           SELECT t, p, 0 FROM unnest($1::text[], $2::int[]) AS k(t, p)
           ON CONFLICT (topic, kafka_partition) DO NOTHING""",
        [t for t, _ in keys],
        [p for _, p in keys],
    )
    return await stored_offsets(conn, sorted({t for t, _ in keys}))


async def stored_offsets(conn: asyncpg.Connection, topics: list[str]) -> dict[TopicPartitionKey, int]:
    rows = await conn.fetch(
        "SELECT topic, kafka_partition, next_offset FROM hub.land_offsets WHERE topic = ANY($1::text[])", topics
    )
    return {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}
