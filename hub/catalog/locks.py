"""Advisory lock keys, all in one place so that none collide, and the SQL that takes them.

The two-key forms take the key as their first argument and `hashtext(topic)` as the second.
"""

from __future__ import annotations

APPLY_LOCK = 0x6875_6201  # only one `hub apply` (or catalog upgrade) changes the catalog at a time
EPOCH_LOCK = 0x6875_6211  # starting a new broker epoch (hub/landing/epoch.py)
# One lock per feed topic, second key hashtext(topic): producers hold it shared while they
# send to the topic, landing takes it exclusively to recreate the topic (hub/landing/broker_memory.py).
TOPIC_LOCK_SPACE = 0x6875_6212


def producer_lock_sql() -> tuple[str, str]:
    """(lock, unlock): what a producer of feed topics runs around each send, for recreating topics while it runs.

    `lock` before handing a batch's records to the Kafka client, `unlock` once the broker
    acknowledged every one of them (or the send failed); both take the batch's distinct
    topic names as `$1` (text[]), on a connection to the hub's database. While the lock is
    held, no topic of the batch can be recreated; landing only tries the exclusive form
    (`TRY_RECREATE_SQL`), so a producer waits at most for one check and a recreation, never the reverse.
    """
    lock = f"SELECT pg_advisory_lock_shared({TOPIC_LOCK_SPACE}, hashtext(t)) FROM unnest($1::text[]) t"
    unlock = f"SELECT pg_advisory_unlock_shared({TOPIC_LOCK_SPACE}, hashtext(t)) FROM unnest($1::text[]) t"
    return lock, unlock


# Landing, before recreating a topic (`$1` is its name): held until the transaction ends.
TRY_RECREATE_SQL = f"SELECT pg_try_advisory_xact_lock({TOPIC_LOCK_SPACE}, hashtext($1))"
