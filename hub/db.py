"""PostgreSQL connections, with driver errors mapped to the hub's own at this boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from hub.errors import ServerUnavailable

# Whatever the database, or the way to it, can answer instead of a result.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
# Those of them that pass: the server restarts, a connection was cut, a lock timed out.
TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (
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


def redact(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return f"{parts.scheme}://{parts.username + '@' if parts.username else ''}{host}{parts.path}"


async def connect(url: str, timeout_s: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=timeout_s)
    except DATABASE_ERRORS as exc:
        raise ServerUnavailable(
            "PostgreSQL", redact(url), f"{exc}; start it with `hub stack up` or check HUB_DATABASE_URL"
        ) from exc


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def timescaledb_available(conn: asyncpg.Connection) -> bool:
    """Install the extension when the server has it; True if feed tables can be hypertables."""
    installed = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if installed:
        return True
    available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not available:
        return False
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return True
