"""Share streams without servers: window arithmetic, MQTT topic levels, pseudonyms as the SQL view computes them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hub.share.projection import escape_level, pseudonym
from hub.share.windows import due, newest_closed, window_start


def test_windows_are_aligned_on_the_views_origin_and_due_only_once_closed_and_older_than_the_delay() -> None:
    bucket, delay, grace = timedelta(minutes=15), timedelta(minutes=30), timedelta(seconds=2)
    now = datetime(2026, 11, 27, 10, 31, 0, tzinfo=UTC)
    assert window_start(now, bucket) == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    newest = newest_closed(now, bucket, delay, grace)
    assert newest == datetime(2026, 11, 27, 9, 45, tzinfo=UTC)  # ends 10:00 <= 10:31 - 30 min
    assert due(newest - 2 * bucket, now, bucket, delay, grace) == [newest - bucket, newest]
    assert due(newest, now, bucket, delay, grace) == []


def test_device_ids_become_one_topic_level() -> None:
    assert escape_level("st-001") == "st-001"
    assert escape_level("a/b+c#d%e") == "a%2Fb%2Bc%23d%25e"


def test_pseudonym_is_the_views_sha256_opad_ipad_construction() -> None:
    key = bytes(range(32))
    padded = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded) + b"st-001").digest()
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded) + inner).hexdigest()
    assert pseudonym(key, "st-001") == outer
