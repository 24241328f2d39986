"""What ingest accepted and refused, per partner and feed, from the counters the workers keep.

Workers add to `hub.ingest_counters` (partner, feed, reason -> messages; reason `accepted` for
records sent to the feed's topic) every two seconds and when they stop, so the figures trail
the live stream by a few seconds. Messages on a topic no feed matches are counted under the
feed `_unknown` of the partner whose namespace they were published in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

ACCEPTED = "accepted"
SKIPPED = frozenset({"header_line"})  # acknowledged and counted, but neither accepted nor refused


@dataclass
class FeedStats:
    partner: str
    feed: str
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0  # CSV header lines
    reasons: list[tuple[str, int]] = field(default_factory=list)  # most common first
    last_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "partner": self.partner,
            "feed": self.feed,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "reasons": [{"reason": r, "messages": n} for r, n in self.reasons],
            "last_at": self.last_at.isoformat() if self.last_at else None,
        }


async def ingest_stats(conn: asyncpg.Connection, partner: str | None = None) -> list[FeedStats]:
    """Every feed of the catalog (with zeros when nothing arrived yet) and every counted `_unknown` topic."""
    rows = await conn.fetch(
        """
        SELECT k.partner_id, k.feed, c.reason, coalesce(c.messages, 0) AS messages, c.last_at
        FROM (SELECT partner_id, name AS feed FROM hub.feeds
              UNION SELECT partner_id, feed FROM hub.ingest_counters) k
        LEFT JOIN hub.ingest_counters c ON c.partner_id = k.partner_id AND c.feed = k.feed
        WHERE $1::text IS NULL OR k.partner_id = $1
        ORDER BY k.partner_id, k.feed, messages DESC, c.reason
        """,
        partner,
    )
    out: dict[tuple[str, str], FeedStats] = {}
    for r in rows:
        stats = out.setdefault((r["partner_id"], r["feed"]), FeedStats(r["partner_id"], r["feed"]))
        reason, n, last_at = r["reason"], int(r["messages"]), r["last_at"]
        if reason is None:
            continue
        if reason == ACCEPTED:
            stats.accepted += n
        elif reason in SKIPPED:
            stats.skipped += n
        else:
            stats.rejected += n
            stats.reasons.append((reason, n))
        if last_at is not None and (stats.last_at is None or last_at > stats.last_at):
            stats.last_at = last_at
    return list(out.values())
