"""The share workers' rows (hub/catalog/share_ddl.py): lane positions, per-stream counters, aggregate windows.

A position is stored only if it is still the one the worker continued from (`expected`) and the
broker epoch is still the one it was read under: a worker that lost a partition in a rebalance, or
whose topic landing recreated (positions back to 0), or whose broker lost its log, is fenced and
positions itself again from what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from hub.agreement import names


async def current_epoch(conn: asyncpg.Connection) -> str | None:
    epoch: str | None = await conn.fetchval("SELECT epoch FROM hub.land_broker")
    return epoch


async def stored(
    conn: asyncpg.Connection, lane: str, topic: str, partitions: Iterable[int], epoch: str | None
) -> dict[int, int]:
    """Where `lane` continues in each partition: its stored offset, 0 if none or of another epoch.

    A partition with no row gets one (at 0), so landing's freeing of broker memory waits for this lane there.
    """
    parts = sorted(set(partitions))
    await conn.execute(
        """INSERT INTO hub.share_offsets (lane, topic, kafka_partition, next_offset, epoch)
           SELECT $1, $2, p, 0, $4 FROM unnest($3::int[]) AS p ON CONFLICT DO NOTHING""",
        lane,
        topic,
        parts,
        epoch,
    )
    rows = await conn.fetch(
        """SELECT kafka_partition, next_offset, epoch FROM hub.share_offsets
           WHERE lane = $1 AND topic = $2 AND kafka_partition = ANY($3::int[])""",
        lane,
        topic,
        parts,
    )
    out = {p: 0 for p in parts}
    for r in rows:
        out[r["kafka_partition"]] = int(r["next_offset"]) if r["epoch"] == epoch else 0
    return out


@dataclass(frozen=True)
class Move:
    lane: str
    topic: str
    partition: int
    expected: int
    new: int


@dataclass
class Shared:
    """What one batch shared for one stream."""

    agreement: str
    consumer: str
    feed: str
    form: str
    lane: str
    records: int = 0
    dead_lettered: int = 0
    last_event_time: datetime | None = None


async def store(
    conn: asyncpg.Connection, moves: Iterable[Move], shared: Mapping[str, Shared], epoch: str | None
) -> list[Move]:
    """Store the moves and counters in one transaction; returns the fenced moves (then nothing is stored)."""
    moves = list(moves)
    async with conn.transaction():
        if await current_epoch(conn) != epoch:
            return moves
        fenced = []
        for m in moves:
            done = await conn.execute(
                """UPDATE hub.share_offsets SET next_offset = $5, epoch = $6, updated_at = now()
                   WHERE lane = $1 AND topic = $2 AND kafka_partition = $3
                     AND (next_offset = $4 OR (epoch IS DISTINCT FROM $6 AND $4 = 0))""",
                m.lane,
                m.topic,
                m.partition,
                m.expected,
                m.new,
                epoch,
            )
            if done == "UPDATE 0":
                fenced.append(m)
        if fenced:
            raise _Fenced(fenced)
        await count(conn, shared)
    return []


class _Fenced(Exception):
    def __init__(self, moves: list[Move]) -> None:
        self.moves = moves


async def store_or_fenced(
    conn: asyncpg.Connection, moves: Iterable[Move], shared: Mapping[str, Shared], epoch: str | None
) -> list[Move]:
    try:
        return await store(conn, moves, shared, epoch)
    except _Fenced as exc:  # the transaction rolled back: nothing of this batch is stored
        return exc.moves


async def count(conn: asyncpg.Connection, shared: Mapping[str, Shared]) -> None:
    for stream, s in shared.items():
        if not s.records and not s.dead_lettered:
            continue
        await conn.execute(
            """INSERT INTO hub.share_counters AS c (stream, agreement_id, consumer, feed, form, lane, records,
                   dead_lettered, last_shared_at, last_event_time)
               VALUES ($1, $2, $3, $4, $5, $6, $7::bigint, $8::bigint, CASE WHEN $7::bigint > 0 THEN now() END, $9)
               ON CONFLICT (stream) DO UPDATE SET records = c.records + $7::bigint,
                   dead_lettered = c.dead_lettered + $8::bigint, lane = $6,
                   last_shared_at = CASE WHEN $7::bigint > 0 THEN now() ELSE c.last_shared_at END,
                   last_event_time = greatest(c.last_event_time, $9)""",
            stream,
            s.agreement,
            s.consumer,
            s.feed,
            s.form,
            s.lane,
            s.records,
            s.dead_lettered,
            s.last_event_time,
        )


async def keep_lanes(conn: asyncpg.Connection, lanes: set[tuple[str, str]]) -> int:
    """Forget the positions of (lane, topic) pairs no running stream reads any more; returns rows removed.

    Their rows would otherwise hold landing back from freeing the local broker's memory for good.
    """
    rows = await conn.fetch("SELECT DISTINCT lane, topic FROM hub.share_offsets")
    gone = [(r["lane"], r["topic"]) for r in rows if (r["lane"], r["topic"]) not in lanes]
    for lane, topic in gone:
        await conn.execute("DELETE FROM hub.share_offsets WHERE lane = $1 AND topic = $2", lane, topic)
    return len(gone)


async def pseudonym_keys(conn: asyncpg.Connection, agreements: Iterable[str]) -> dict[str, bytes]:
    rows = await conn.fetch(
        f"SELECT agreement_id, key FROM {names.PRIVATE_SCHEMA}.pseudonym_keys WHERE agreement_id = ANY($1::text[])",
        sorted(set(agreements)),
    )
    return {r["agreement_id"]: bytes(r["key"]) for r in rows}


async def landing_caught_up(conn: asyncpg.Connection, topic: str) -> bool:
    """Whether landing has stored every record of `topic` its last fetches saw (its log ends)."""
    behind = await conn.fetchval(
        "SELECT count(*) FROM hub.land_offsets WHERE topic = $1 AND next_offset < coalesce(log_end, 0)", topic
    )
    return int(behind) == 0
