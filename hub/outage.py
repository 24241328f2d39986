"""One log line per change of state while a server is away: down, then back; the retries between are quiet.

A worker retries what fails while PostgreSQL or Kafka is down (hub/retriable.py decides what may be
retried). Logging every retry filled the logs with the same error, and a driver's traceback with
each; an operator needs to know when a server went away, that the worker is waiting for it, and when
it came back and after how long. The retries themselves are logged at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub import metrics
from hub.errors import shortened
from hub.retriable import server_of


@dataclass
class _Away:
    since: float
    retries: int


class Outages:
    """The servers one worker is waiting for (each worker has its own)."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self.away: dict[str, _Away] = {}

    def failed(self, what: str, exc: BaseException, server: str | None = None) -> str:
        """A retriable failure of `what`: logged only if its server was not known to be away. Returns the server.

        `server`: the one the call talks to, for failures any client raises (a refused connection, a time-out).
        """
        server = server_of(exc, server)
        reason = shortened(f"{type(exc).__name__}: {exc}", 300)
        metrics.server_failed(server)
        away = self.away.get(server)
        if away is None:
            self.away[server] = _Away(self.clock(), 1)
            self.log.warning(
                "%s is unavailable (cannot %s: %s); retrying quietly until it is back", server, what, reason
            )
        else:
            away.retries += 1
            self.log.debug("%s still unavailable (cannot %s: %s)", server, what, reason)
        return server

    def back(self, server: str) -> None:
        """`server` answered again: logged once, with how long it was away."""
        metrics.server_back(server)
        away = self.away.pop(server, None)
        if away is not None:
            self.log.warning(
                "%s is back after %.1f s (%d failed attempts)", server, self.clock() - away.since, away.retries
            )


# What the Kafka client logs, at ERROR, for every attempt to reach a broker that is away: hundreds of
# lines a second while it is down. The worker's own lines (above) say the same once.
_UNREACHABLE = (
    "Unable connect to node",
    "Unable to update metadata",
    "NodeNotReadyError",
    "KafkaConnectionError",
    "Connect call failed",
    "coordinator dead",
    "Heartbeat",
    "Group Coordinator Request failed",
)


class DriverNoise(logging.Filter):
    """Turns the Kafka client's "cannot reach the broker" records into DEBUG records (a handler filter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiokafka") and logging.INFO < record.levelno <= logging.ERROR:
            text = record.getMessage()
            if any(marker in text for marker in _UNREACHABLE):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True
