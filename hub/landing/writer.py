"""One database transaction per batch: rows, Kafka offsets and counters commit together.

Rows go through COPY into a temporary staging table and `INSERT .. ON CONFLICT
(device_id, time) DO NOTHING`, so a record delivered twice lands once. The next
offset of each partition is stored in the same transaction (`hub.land_offsets`), so
after any crash the worker resumes exactly where the table is: no loss, no duplicate.
A row the database refuses (a value out of the column's range) is set aside for the
dead-letter topic instead of blocking its partition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from hub.control.identifiers import qualified, quote_ident
from hub.landing.rows import FeedRows, Rejected, rejected


@dataclass
class TableBatch:
    partner_id: str
    feed: str
    schema: str
    table: str
    rows: FeedRows
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> rows in this batch


@dataclass
class WriteResult:
    inserted: int = 0
    duplicates: int = 0
    refused: list[Rejected] = field(default_factory=list)


DeadLetter = Callable[[list[Rejected]], Awaitable[None]]


async def write_batch(
    conn: asyncpg.Connection,
    batches: list[TableBatch],
    offsets: dict[tuple[str, int], int],
    dead_letter: DeadLetter,
) -> WriteResult:
    """Write every table batch and the offsets in one transaction.

    Rows the database refuses are handed to `dead_letter` before the commit, so they are
    in the dead-letter topic before their offsets are stored.
    """
    result = WriteResult()
    async with conn.transaction():
        for b in sorted(batches, key=lambda b: (b.schema, b.table)):  # one lock order: no deadlock between workers
            if b.rows.rows:
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
        await conn.executemany(
            """INSERT INTO hub.land_offsets (topic, kafka_partition, next_offset) VALUES ($1, $2, $3)
               ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = $3, updated_at = now()""",
            [(t, p, o) for (t, p), o in offsets.items()],
        )
        if result.refused:
            await dead_letter(result.refused)
    return result


async def _insert(conn: asyncpg.Connection, b: TableBatch, result: WriteResult) -> int:
    target = qualified(b.schema, b.table)
    cols = ", ".join(quote_ident(c) for c in b.rows.columns)
    staging = quote_ident(f"_stage_{b.schema}_{b.table}")
    await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {target}) ON COMMIT DELETE ROWS")
    try:
        async with conn.transaction():  # a savepoint: a refused row must not abort the whole batch
            await conn.copy_records_to_table(staging.strip('"'), records=b.rows.rows, columns=b.rows.columns)
            status = await conn.execute(
                f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging} ON CONFLICT (device_id, time) DO NOTHING"
            )
            await conn.execute(f"TRUNCATE {staging}")
            return int(status.split()[-1])
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.UntranslatableCharacterError):
        return await _insert_one_by_one(conn, b, target, cols, result)


async def _insert_one_by_one(
    conn: asyncpg.Connection, b: TableBatch, target: str, cols: str, result: WriteResult
) -> int:
    params = ", ".join(f"${i + 1}" for i in range(len(b.rows.columns)))
    stmt = f"INSERT INTO {target} ({cols}) VALUES ({params}) ON CONFLICT (device_id, time) DO NOTHING"
    inserted = 0
    for row, source in zip(b.rows.rows, b.rows.sources, strict=True):
        try:
            async with conn.transaction():
                status = await conn.execute(stmt, *row)
                inserted += int(status.split()[-1])
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            result.refused.append(rejected(source, "refused_by_database", f"{type(exc).__name__}: {exc}"))
    return inserted


async def stored_offsets(conn: asyncpg.Connection, topics: list[str]) -> dict[tuple[str, int], int]:
    rows = await conn.fetch(
        "SELECT topic, kafka_partition, next_offset FROM hub.land_offsets WHERE topic = ANY($1::text[])", topics
    )
    return {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}
