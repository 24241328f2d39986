"""Queries of `hub.dead_letters` (the table is in store.py's CATALOG_DDL; landing writes it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class DeadLetter:
    id: int
    at: datetime
    partner: str
    feed: str
    reason: str
    message: str
    stage: str
    mqtt_topic: str | None
    payload: bytes
    replays: int
    replayed_at: datetime | None


def _letter(r: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        r["id"], r["at"], r["partner_id"], r["feed"], r["reason"], r["message"], r["stage"], r["mqtt_topic"],
        bytes(r["payload"]), r["replays"], r["replayed_at"],
    )  # fmt: skip


async def listed(
    conn: asyncpg.Connection,
    *,
    partner: str | None = None,
    feed: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    replayed: bool = False,
    limit: int = 50,
) -> list[DeadLetter]:
    """The newest dead letters first; those replayed into their feed only with `replayed`."""
    rows = await conn.fetch(
        """SELECT * FROM hub.dead_letters
           WHERE ($1::text IS NULL OR partner_id = $1) AND ($2::text IS NULL OR feed = $2)
             AND ($3::text IS NULL OR reason = $3) AND ($4::timestamptz IS NULL OR at >= $4)
             AND ($5 OR replayed_at IS NULL)
           ORDER BY id DESC LIMIT $6""",
        partner, feed, reason, since, replayed, limit,
    )  # fmt: skip
    return [_letter(r) for r in rows]


async def claim_for_replay(
    conn: asyncpg.Connection, partner: str, feed: str, since: datetime | None, after_id: int, limit: int
) -> list[DeadLetter]:
    """Dead letters refused at ingest that a replay of `partner`.`feed` may re-run, locked for this transaction.

    Those of the feed, and those of no feed (`_unknown`: their topic matched none when they came,
    perhaps because the config's topic was wrong). Rows another replay holds are skipped.
    """
    rows = await conn.fetch(
        """SELECT * FROM hub.dead_letters
           WHERE partner_id = $1 AND feed IN ($2, '_unknown') AND stage = 'ingest' AND replayed_at IS NULL
             AND ($3::timestamptz IS NULL OR at >= $3) AND id > $4
           ORDER BY id LIMIT $5
           FOR UPDATE SKIP LOCKED""",
        partner, feed, since, after_id, limit,
    )  # fmt: skip
    return [_letter(r) for r in rows]


async def mark_replayed(conn: asyncpg.Connection, ids: list[int], feed: str) -> None:
    await conn.execute(
        """UPDATE hub.dead_letters SET replayed_at = now(), replays = replays + 1, feed = $2
           WHERE id = ANY($1::bigint[])""",
        ids,
        feed,
    )


async def refused_again(conn: asyncpg.Connection, refusals: list[tuple[int, str, str, str]]) -> None:
    """(id, feed, reason, message) of dead letters a replay refused again: they keep the new reason."""
    await conn.executemany(
        "UPDATE hub.dead_letters SET feed = $2, reason = $3, message = $4, replays = replays + 1 WHERE id = $1",
        refusals,
    )
