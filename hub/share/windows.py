"""Aggregate streams: each closed window of the consumer's aggregate view, emitted once it closes.

A window of an aggregate grant counts every device of the feed, whichever share worker reads which
partition, and its k-devices rule is over all of them: so a window is not summed in a worker's
memory but read, once closed, from the consumer's own aggregate view (hub/control/share_sql.py),
which re-buckets the rollup landing keeps. The stream and SQL then agree by construction: the same
buckets (tumbling, aligned on 2000-01-03 UTC), the same weighted averages, the same suppression,
the same delay and validity (the view evaluates them at the statement's time).

A window [w, w + bucket) is due once `now - delay - grace >= w + bucket` and landing has stored
every record its last fetches saw of the feed's topic; `hub.share_windows` keeps the last window
emitted per stream, its row locked while one worker emits (the others skip it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # hub/control/tables.py BUCKET_ORIGIN
MAX_WINDOWS_AT_ONCE = 100


def window_start(t: datetime, bucket: timedelta) -> datetime:
    return t - (t - ORIGIN) % bucket


def newest_closed(now: datetime, bucket: timedelta, delay: timedelta, grace: timedelta) -> datetime:
    """The start of the newest window the view shows at `now - grace` (closed and older than the delay)."""
    return window_start(now - delay - grace, bucket) - bucket


def due(last: datetime, now: datetime, bucket: timedelta, delay: timedelta, grace: timedelta) -> list[datetime]:
    """Windows to emit after `last` (a new stream's `last` is a few windows back: `share_window_backfill`)."""
    newest = newest_closed(now, bucket, delay, grace)
    out: list[datetime] = []
    w = last + bucket
    while w <= newest and len(out) < MAX_WINDOWS_AT_ONCE:
        out.append(w)
        w += bucket
    return out
