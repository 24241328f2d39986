"""How the landing worker waits out what passes: which failures are transient, and the backoff.

A database restarting, a cut connection, a lock timeout or a Kafka broker away for a while
are waited out with a doubling backoff (capped by `land_retry_max_s`) and nothing new is taken
meanwhile; anything else is a bug or a configuration error and stops the worker. A stop
request ends the wait at once (`Stopping`), so a worker whose database is down still stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError

from hub.errors import HubError, ServerUnavailable

log = logging.getLogger("hub.land")

T = TypeVar("T")

# Failures that pass: the server restarts, a connection was cut, a lock timed out.
DATABASE_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError, ConnectionFailureError, ...
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.OperatorInterventionError,  # AdminShutdownError, CrashShutdownError, CannotConnectNowError
    asyncpg.InsufficientResourcesError,  # TooManyConnectionsError, DiskFullError
    asyncpg.TransactionRollbackError,  # deadlock or serialization failure: run it again
    asyncpg.UndefinedTableError,  # a feed table dropped by hand: `hub apply` creates it again
    asyncpg.UndefinedColumnError,  # a column the catalog has and the table lacks (re-read the catalog)
    # An idle pooled connection that got the server's "shutting down" before its socket closed is handed
    # out mid-error ("another operation is in progress"); a retry replaces every pooled connection.
    asyncpg.InternalClientError,
)
KAFKA_TRANSIENT: tuple[type[BaseException], ...] = (KafkaError, ServerUnavailable)
TRANSIENT = DATABASE_TRANSIENT + KAFKA_TRANSIENT
KAFKA_CHECK_FAILED: tuple[type[BaseException], ...] = (*KAFKA_TRANSIENT, TimeoutError)
NOT_NOW: tuple[type[BaseException], ...] = (*TRANSIENT, HubError)


class Stopping(Exception):
    """Raised out of a retry loop when the worker was asked to stop."""


class Retry:
    """`await retry(what, fn)` runs `fn` until it succeeds, waiting longer after each transient failure.

    `after_database_failure` runs after each database failure (the worker empties its connection
    pool: a pooled connection that saw the server go away can still be mid-error when handed out).
    """

    def __init__(
        self,
        stopping: asyncio.Event,
        max_backoff_s: float,
        after_database_failure: Callable[[], Awaitable[None]],
    ) -> None:
        self.stopping = stopping
        self.max_backoff_s = max_backoff_s
        self.after_database_failure = after_database_failure
        self.count = 0  # transient failures waited out

    async def __call__(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        backoff = 0.2
        while True:
            try:
                return await fn()
            except TRANSIENT as exc:
                if self.stopping.is_set():
                    raise Stopping(what) from exc
                self.count += 1
                log.warning("cannot %s (%r): retrying in %.1f s", what, exc, backoff)
                if isinstance(exc, DATABASE_TRANSIENT):
                    await self.after_database_failure()
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
                raise Stopping(what)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self.max_backoff_s)
