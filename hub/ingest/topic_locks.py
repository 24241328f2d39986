"""The feed topics a batch is being sent to, announced to landing with shared advisory locks.

Landing recreates a fully landed feed topic to give the local broker's memory back
(hub/landing/broker_memory.py). A record the broker acknowledged between landing's "every
record is landed" check and its delete would be lost, so ingest holds
`pg_advisory_lock_shared(TOPIC_LOCK_SPACE, hashtext(topic))` for each feed topic of a
batch from before the records go to the Kafka client until every one is acknowledged or
failed; landing only tries the exclusive form, so it skips a topic that is being sent to.

The locks live on a connection of their own: session-level advisory locks belong to the
connection, and closing it is a release that cannot fail. Cost per batch: one round trip
to take every lock of the batch, one to release them.
"""

from __future__ import annotations

import logging

import asyncpg

from hub.catalog.locks import producer_lock_sql
from hub.db import DATABASE_ERRORS, redact
from hub.errors import ServerUnavailable

log = logging.getLogger("hub.ingest")


class TopicLocks:
    """Shared advisory locks on feed topics, held by this worker while it sends to them."""

    def __init__(self, database_url: str, timeout_s: float = 15.0) -> None:
        self.database_url = database_url
        self.timeout_s = timeout_s
        self._lock_sql, self._unlock_sql = producer_lock_sql()
        self._conn: asyncpg.Connection | None = None
        self.failures = 0  # batches not sent because the database could not be reached

    async def acquire(self, topics: list[str]) -> None:
        """Take the shared lock of each topic; waits while landing is recreating one of them.

        Raises ServerUnavailable if the database cannot be reached: then nothing may be sent.
        """
        if not topics:
            return
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.database_url, timeout=self.timeout_s)
            await self._conn.execute(self._lock_sql, topics, timeout=self.timeout_s)
        except BaseException as exc:
            self.drop()  # whichever of the locks were taken go with the connection
            if isinstance(exc, DATABASE_ERRORS):
                self.failures += 1
                where = redact(self.database_url)
                raise ServerUnavailable("PostgreSQL", where, f"cannot lock feed topics: {exc!r}") from exc
            raise

    async def release(self, topics: list[str]) -> bool:
        """Release the topics' locks; True if every one was still held, i.e. held for the whole send.

        False when the connection was lost meanwhile (the server then released the locks at
        some unknown moment): what the send delivered cannot be trusted and must be sent again.
        """
        if not topics:
            return True
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            rows = await conn.fetch(self._unlock_sql, topics, timeout=self.timeout_s)
        except DATABASE_ERRORS as exc:
            log.warning("cannot release topic locks: %r", exc)
            self.drop()
            return False
        except BaseException:
            self.drop()
            raise
        return len(rows) == len(topics) and all(r[0] for r in rows)

    def drop(self) -> None:
        """Close the connection at once, and with it every lock it holds (safe while being cancelled)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()
