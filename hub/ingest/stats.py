"""What became of every message the hub acknowledged, per partner and feed: `hub stats`.

Read from what is durable, each count written in the transaction or round trip that made it true,
so a worker killed at any moment leaves them exact:

- accepted: messages that became rows (`hub.land_counters`, committed with the rows);
- duplicates: messages identical to a row already landed, which a device sent again (a QoS 1 retry,
  a repeated reading): counted, not landed twice (`hub.land_outcomes`, with the landing transaction);
- refused: dead letters, by reason: ingest's (`hub.ingest_counters`, written with the
  acknowledgement) and landing's (`duplicate_key`, `refused_by_database`, ...: `hub.land_outcomes`);
- lost: acknowledged records a Kafka broker lost before they landed (only possible with
  `HUB_INGEST_ACK=kafka` on a broker that is not durable; counted exactly, hub/landing/lost.py).

So acknowledged = accepted + duplicates + refused + lost (+ skipped: messages that carry no reading,
counted with their acknowledgement), and accepted equals the rows landed.
`redelivered` counts the hub's own copies of a message it had already sent (an MQTT redelivery
after a worker stopped, a resend after a broker restart): landed once, not acknowledged twice, so
outside that sum. With `HUB_INGEST_ACK=kafka` a message is acknowledged before it lands and
appears here once it has. Messages on a topic no feed matches are counted under the feed
`_unknown` of the partner whose namespace they were published in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

DUPLICATE, REDELIVERED, LOST = "duplicate", "redelivered", "lost"
SKIPPED = frozenset({"header_line"})  # acknowledged and counted, but neither accepted nor refused


@dataclass
class FeedStats:
    partner: str
    feed: str
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    lost: int = 0
    skipped: int = 0  # e.g. CSV header lines
    redelivered: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)  # refusals, most common first
    last_at: datetime | None = None

    @property
    def acknowledged(self) -> int:
        return self.accepted + self.duplicates + self.refused + self.lost + self.skipped

    def as_json(self) -> dict[str, Any]:
        return {
            "partner": self.partner,
            "feed": self.feed,
            "acknowledged": self.acknowledged,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "rejected": self.refused,  # the name of earlier versions
            "lost": self.lost,
            "skipped": self.skipped,
            "redelivered": self.redelivered,
            "reasons": [{"reason": r, "messages": n} for r, n in self.reasons],
            "last_at": self.last_at.isoformat() if self.last_at else None,
        }


_STATS_SQL = """
WITH keys AS (
    SELECT partner_id, name AS feed FROM hub.feeds
    UNION SELECT partner_id, feed FROM hub.ingest_counters
    UNION SELECT partner_id, feed FROM hub.land_outcomes
), landed AS (
    SELECT partner_id, feed, sum(rows) AS n FROM hub.land_counters GROUP BY partner_id, feed
), outcomes AS (
    -- ingest's `accepted` counter (earlier versions) is superseded by the rows landed
    SELECT partner_id, feed, reason AS outcome, messages AS n, last_at
    FROM hub.ingest_counters WHERE reason <> 'accepted'
    UNION ALL SELECT partner_id, feed, outcome, records, last_at FROM hub.land_outcomes
), seen AS (
    SELECT partner_id, feed, max(last_seen) AS last_at FROM hub.devices GROUP BY partner_id, feed
)
SELECT k.partner_id, k.feed, coalesce(l.n, 0)::bigint AS accepted, s.last_at AS seen, o.outcome, o.n, o.last_at
FROM keys k
LEFT JOIN landed l ON l.partner_id = k.partner_id AND l.feed = k.feed
LEFT JOIN seen s ON s.partner_id = k.partner_id AND s.feed = k.feed
LEFT JOIN outcomes o ON o.partner_id = k.partner_id AND o.feed = k.feed
WHERE $1::text IS NULL OR k.partner_id = $1
ORDER BY k.partner_id, k.feed
"""


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


async def ingest_stats(conn: asyncpg.Connection, partner: str | None = None) -> list[FeedStats]:
    """Every feed of the catalog (with zeros when nothing arrived yet) and every counted `_unknown` topic."""
    out: dict[tuple[str, str], FeedStats] = {}
    reasons: dict[tuple[str, str], dict[str, int]] = {}
    for r in await conn.fetch(_STATS_SQL, partner):
        key = (r["partner_id"], r["feed"])
        stats = out.get(key)
        if stats is None:
            stats = out[key] = FeedStats(*key, accepted=int(r["accepted"]), last_at=r["seen"])
            reasons[key] = {}
        outcome, n = r["outcome"], int(r["n"] or 0)
        if outcome is None:
            continue
        stats.last_at = _later(stats.last_at, r["last_at"])
        if outcome == DUPLICATE:
            stats.duplicates += n
        elif outcome == REDELIVERED:
            stats.redelivered += n
        elif outcome == LOST:
            stats.lost += n
        elif outcome in SKIPPED:
            stats.skipped += n
        else:
            stats.refused += n
            reasons[key][outcome] = reasons[key].get(outcome, 0) + n
    for key, stats in out.items():
        stats.reasons = sorted(reasons[key].items(), key=lambda rn: (-rn[1], rn[0]))
    return list(out.values())
