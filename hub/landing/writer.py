"""One database transaction per batch: rows, Kafka offsets, counters and dead letters commit together.

Rows are COPied straight into the feed table, in a savepoint; when a row is there already
(a record delivered again) the savepoint rolls back and the batch goes through COPY into a
temporary staging table and `INSERT .. ON CONFLICT (device_id, time) DO NOTHING`, so a
record delivered twice lands once. The direct COPY costs the database about half as much
per row, and records are delivered again only after a crash or a rebalance; a table whose
last batch met rows already landed takes the staging path directly (`TableBatch.copy_first`)
until a batch of it meets none. The next offset of
each partition is stored in the same transaction (`hub.land_offsets`), so after any crash
the worker resumes exactly where the table is: no loss, no duplicate.

Offsets are fenced: a worker stores a partition's offset only if the stored one is still
the one it started the batch from (`OffsetMove.expected`), read under a row lock, and only
if the broker epoch it fetched under is still the current one (`hub.land_broker`). A worker
that lost the partition in a rebalance, or fetched from a broker that has since lost its
log, therefore never moves the offset; its rows are still inserted (harmless: inserting is
idempotent, and after a broker reset they may be the only copy left).

A row the database refuses (a NUL character in text, a value out of the column's range)
goes to the dead-letter topic, sent before the commit, instead of blocking its partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from hub.identifiers import qualified, quote_ident
from hub.landing import dead_letter_rows
from hub.landing.rows import FeedRows, Rejected, rejected
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


# What the database answers about one row that it will never take.
REFUSED_ROW = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)
# What asyncpg raises while encoding a value for COPY (before the server sees it).
REFUSED_BY_CLIENT = (ValueError, OverflowError, TypeError)


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
    duplicates: int = 0
    refused: list[Rejected] = field(default_factory=list)
    dead_lettered: int = 0
    dead_letters_stored: int = 0  # records of the dead-letter topic written to hub.dead_letters
    met_landed: set[tuple[str, str]] = field(default_factory=set)  # (schema, table)s with rows already there
    stored: set[TopicPartitionKey] = field(default_factory=set)  # partitions whose offsets moved
    fenced: dict[TopicPartitionKey, int | None] = field(default_factory=dict)  # partition -> offset found instead
    epoch_changed: bool = False


DeadLetter = Callable[[list[Rejected]], Awaitable[None]]


async def write_batch(
    conn: asyncpg.Connection,
    batches: list[TableBatch],
    moves: dict[TopicPartitionKey, OffsetMove],
    rejected_early: list[Rejected],
    dead_letter: DeadLetter,
    epoch: str | None = None,
    dead_letters: Sequence[tuple[TopicPartitionKey, dead_letter_rows.Row]] = (),
) -> WriteResult:
    """Write every table batch, the offsets that may move, and their dead letters, in one transaction.

    `rejected_early` are records that never became rows (not decodable, unknown schema);
    they and the rows the database refuses are dead-lettered before the commit, for the
    partitions whose offsets this transaction moves, so they are in the dead-letter
    topic before their offsets are stored. `dead_letters` are records of the dead-letter topic
    itself: stored in `hub.dead_letters` for the partitions whose offsets move, so exactly once.
    """
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
        for b in sorted(batches, key=lambda b: (b.schema, b.table)):  # one lock order: no deadlock between workers
            if not b.rows.rows:
                continue
            inserted = await _insert(conn, b, result)
            result.inserted += inserted
            result.duplicates += len(b.rows.rows) - inserted
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
        letters = [r for r in [*rejected_early, *result.refused] if (r.topic, r.partition) in moving]
        if letters:
            await dead_letter(letters)
            result.dead_lettered = len(letters)
    return result


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


def staging_name(b: TableBatch) -> str:
    """A temporary table per target table, column list and column types: a schema change gets a fresh one
    (an old one would keep, say, `real` for a column widened to `double precision`, and round every value)."""
    key = "\x00".join([b.schema, b.table, b.signature, *b.rows.columns])
    return f"_stage_{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def staging_sql(target: str, cols: str, staging: str) -> str:
    """The batch's columns with the target's types and no constraints: `LIKE target` would copy
    NOT NULL without the defaults (ingested_at), and COPY would then refuse every batch."""
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(staging)} ON COMMIT DELETE ROWS"
        f" AS SELECT {cols} FROM {target} WITH NO DATA"
    )


def insert_from_staging_sql(target: str, cols: str, staging: str) -> str:
    return (
        f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {quote_ident(staging)}"
        ' ON CONFLICT ("device_id", "time") DO NOTHING'
    )


def insert_row_sql(target: str, cols: str, n: int) -> str:
    params = ", ".join(f"${i + 1}" for i in range(n))
    return f'INSERT INTO {target} ({cols}) VALUES ({params}) ON CONFLICT ("device_id", "time") DO NOTHING'


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
    inserted = await _insert_staged(conn, b, result)
    if inserted < len(b.rows.rows):
        result.met_landed.add((b.schema, b.table))
    return inserted


async def _insert_staged(conn: asyncpg.Connection, b: TableBatch, result: WriteResult) -> int:
    target = qualified(b.schema, b.table)
    cols = ", ".join(quote_ident(c) for c in b.rows.columns)
    staging = staging_name(b)
    await conn.execute(staging_sql(target, cols, staging))
    try:
        async with conn.transaction():  # a savepoint: a refused row must not abort the whole batch
            await conn.copy_records_to_table(staging, records=b.rows.rows, columns=b.rows.columns)
            status = await conn.execute(insert_from_staging_sql(target, cols, staging))
            return int(status.split()[-1])
    except (*REFUSED_ROW, *REFUSED_BY_CLIENT):
        return await _insert_one_by_one(conn, b, target, cols, result)


async def _insert_one_by_one(
    conn: asyncpg.Connection, b: TableBatch, target: str, cols: str, result: WriteResult
) -> int:
    stmt = insert_row_sql(target, cols, len(b.rows.columns))
    inserted = 0
    for row, source in zip(b.rows.rows, b.rows.sources, strict=True):
        try:
            async with conn.transaction():
                status = await conn.execute(stmt, *row)
                inserted += int(status.split()[-1])
        except REFUSED_ROW as exc:
            result.refused.append(rejected(source, "refused_by_database", f"{type(exc).__name__}: {exc}"))
    return inserted


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
