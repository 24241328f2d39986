"""The feed topics a batch is being sent to, announced to landing with shared advisory locks.

Landing recreates a fully landed feed topic to give the local broker's memory back
(hub/landing/broker_memory.py). A record the broker acknowledged between landing's "every
record is landed" check and its delete would be lost, so ingest holds
`pg_advisory_lock_shared(TOPIC_LOCK_SPACE, hashtext(topic))` for each feed topic of a
batch from before the records go to the Kafka client until every one is acknowledged or
failed; landing only tries the exclusive form, so it skips a topic that is being sent to.

The locks live on a connection of their own: session-level advisory locks belong to the
connection, and closing it is a release that cannot fail. Cost per batch: one round trip
to take every lock of the batch, one to release them, which also writes what must be
durable with the acknowledgement (ack_ledger.py). The same connection serves the worker's
other acknowledgement queries (`run`), one at a time.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from hub.catalog.locks import producer_lock_sql
from hub.db import DATABASE_ERRORS, redact
from hub.errors import ServerUnavailable
from hub.ingest.ack_ledger import RELEASE_SQL, Released, released

log = logging.getLogger("hub.ingest")


class TopicLocks:
    """Shared advisory locks on feed topics, held by this worker while it sends to them."""

    def __init__(self, database_url: str, timeout_s: float = 15.0) -> None:
        self.database_url = database_url
        self.timeout_s = timeout_s
        self._lock_sql, _unlock_sql = producer_lock_sql()
        self._conn: asyncpg.Connection | None = None
        self.failures = 0  # batches not sent because the database could not be reached

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.database_url, timeout=self.timeout_s)
        return self._conn

    def _unavailable(self, exc: BaseException, what: str) -> ServerUnavailable:
        return ServerUnavailable("PostgreSQL", redact(self.database_url), f"{what}: {exc!r}")

    async def acquire(self, topics: list[str]) -> None:
        """Take the shared lock of each topic; waits while landing is recreating one of them.

        Raises ServerUnavailable if the database cannot be reached: then nothing may be sent.
        """
        if not topics:
            return
        try:
            conn = await self._connection()
            await conn.execute(self._lock_sql, topics, timeout=self.timeout_s)
        except BaseException as exc:
            self.drop()  # whichever of the locks were taken go with the connection
            if isinstance(exc, DATABASE_ERRORS):
                self.failures += 1
                raise self._unavailable(exc, "cannot lock feed topics") from exc
            raise

    async def release(self, topics: list[str], args: tuple[Any, ...]) -> Released | None:
        """Release the topics' locks with `RELEASE_SQL` (`args` from `ack_ledger.release_args`, `$1` = `topics`).

        None when a lock was not held for the whole send (the connection was lost meanwhile, and the
        server released the locks at some unknown moment): what the send delivered cannot be trusted
        and must be sent again. Nothing was recorded then.
        """
        if topics and (self._conn is None or self._conn.is_closed()):
            return None
        try:
            conn = await self._connection()
            row = await conn.fetchrow(RELEASE_SQL, *args, timeout=self.timeout_s)
        except DATABASE_ERRORS as exc:
            log.warning("cannot release topic locks: %r", exc)
            self.drop()
            return None
        except BaseException:
            self.drop()
            raise
        assert row is not None
        result = released(row)
        if len(result.unlocked) != len(topics) or not all(result.unlocked):
            return None
        return result

    async def run(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """One statement on this connection (no lock may be held by the caller); ServerUnavailable if it fails."""
        try:
            conn = await self._connection()
            return await conn.fetchrow(sql, *args, timeout=self.timeout_s)
        except DATABASE_ERRORS as exc:
            self.drop()
            raise self._unavailable(exc, "cannot record acknowledgements") from exc

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
