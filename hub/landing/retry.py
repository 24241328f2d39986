"""How the landing worker waits out what passes: which failures are transient, and the backoff.

A database restarting, a cut connection, a lock timeout or a Kafka broker away for a while
are waited out with a doubling backoff (capped by `land_retry_max_s`) and nothing new is taken
meanwhile (logged once when the server goes away and once when it is back: hub/outage.py); anything
else is a bug or a configuration error and stops the worker. A stop
request ends the wait at once (`Stopping`), so a worker whose database is down still stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hub.errors import HubError
from hub.outage import Outages
from hub.retriable import TRANSIENT, database_failure, retriable

log = logging.getLogger("hub.land")

T = TypeVar("T")

NOT_NOW: tuple[type[BaseException], ...] = (*TRANSIENT, HubError)  # while a rebalance positions partitions


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
        self.outages = Outages(log)

    async def __call__(self, what: str, fn: Callable[[], Awaitable[T]], server: str = "PostgreSQL") -> T:
        """`server`: the one `fn` talks to (most calls are the database's), named in the log if it goes away."""
        backoff = 0.2
        away: set[str] = set()
        while True:
            try:
                result = await fn()
            except Exception as exc:
                if not retriable(exc):
                    raise
                if self.stopping.is_set():
                    raise Stopping(what) from exc
                self.count += 1
                away.add(self.outages.failed(what, exc, server))  # one line when a server goes away, not one a retry
                if database_failure(exc):
                    await self.after_database_failure()
            else:
                for name in away:
                    self.outages.back(name)
                return result
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
                raise Stopping(what)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self.max_backoff_s)
