"""Retriable versus fatal, decided in one place.

A failure is retriable when the same call may succeed later without anyone changing anything:
a server restarting, a connection cut, a lock timed out. The hub's own errors say so themselves
(`HubError.retriable`); driver errors are listed by the module that talks to that server
(hub/db.py, hub/kafka.py; the MQTT source maps paho's to `ServerUnavailable`). Anything else is a
bug or a configuration error, and retrying it would only hide it.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

from hub.db import TRANSIENT_DATABASE_ERRORS
from hub.errors import HubError, ServerUnavailable
from hub.kafka import TRANSIENT_KAFKA_ERRORS

TRANSIENT: tuple[type[Exception], ...] = (*TRANSIENT_DATABASE_ERRORS, *TRANSIENT_KAFKA_ERRORS)


def retriable(exc: BaseException) -> bool:
    if isinstance(exc, HubError):
        return exc.retriable
    return isinstance(exc, TRANSIENT)


def database_failure(exc: BaseException) -> bool:
    """A retriable failure of the database in particular (its pooled connections may be stale after it)."""
    return isinstance(exc, TRANSIENT_DATABASE_ERRORS)


def server_of(exc: BaseException, hint: str | None = None) -> str:
    """Which server a retriable failure is about, for the logs: the error's own class decides; a socket error
    or time-out, which either server's client raises, is the caller's `hint` (the server it was talking to)."""
    if isinstance(exc, ServerUnavailable):
        return exc.server
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return "PostgreSQL"
    if isinstance(exc, KafkaError):
        return "Kafka"
    return hint or "PostgreSQL or Kafka"
