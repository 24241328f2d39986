"""PostgreSQL connections, with driver errors mapped to the hub's own at this boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from hub.errors import ConfigError, ServerUnavailable

# Whatever the database, or the way to it, can answer instead of a result.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A query sent just as the server dies (kill -9: its backends' last words arrive mid-query) fails with
    # "cannot switch to state 12; another operation (2) is in progress", not a connection error.
    asyncpg.InternalClientError,
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


# --- TimescaleDB: which mode the hub runs in, decided without changing anything ------------------------

TIMESCALEDB = "timescaledb"


@dataclass(frozen=True)
class TimescaleState:
    """What a PostgreSQL server says about TimescaleDB (read by `timescale_state`, decided by pure functions)."""

    installed: bool  # CREATE EXTENSION was run in this database
    available: bool  # the server has the extension's files
    preloaded: bool  # the library is in shared_preload_libraries
    config_file: str | None = None  # the server's postgresql.conf, where visible to this role


def preload_fix(config_file: str | None) -> str:
    """The one-line fix for an extension that is available but not preloaded: which setting, which file."""
    where = config_file or "the server's postgresql.conf (SHOW config_file)"
    return (
        f"add {TIMESCALEDB} to shared_preload_libraries in {where} "
        f"(shared_preload_libraries = '{TIMESCALEDB}', keeping any libraries already listed) and restart PostgreSQL; "
        "or remove the extension's package to run on plain PostgreSQL"
    )


def uses_timescaledb(state: TimescaleState) -> bool:
    """True if feed tables are (or will be) hypertables; a ConfigError with the fix if the server cannot load it.

    TimescaleDB must be preloaded: without it `CREATE EXTENSION` fails, and every command failed with a
    70-line traceback. An extension already installed is used as it is (some builds load it without
    preloading, such as the WASM engine the tests use).
    """
    if state.installed:
        return True
    if not state.available:
        return False
    if not state.preloaded:
        raise ConfigError(
            f"TimescaleDB is installed on this PostgreSQL server but not preloaded: {preload_fix(state.config_file)}"
        )
    return True


def extension_error(message: str, config_file: str | None) -> str | None:
    """The hub's one-line explanation of a server error about TimescaleDB, or None if it is another error."""
    if "must be preloaded" in message and TIMESCALEDB in message:
        return f"TimescaleDB is not preloaded by this PostgreSQL server: {preload_fix(config_file)}"
    return None


async def timescale_state(conn: asyncpg.Connection) -> TimescaleState:
    """Read-only: what the server says about TimescaleDB."""
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1) AS installed,
                  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1) AS available,
                  $1 = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
                      AS preloaded,
                  current_setting('config_file', true) AS config_file""",
        TIMESCALEDB,
    )
    return TimescaleState(row["installed"], row["available"], row["preloaded"], row["config_file"])


async def install_timescaledb(conn: asyncpg.Connection) -> bool:
    """`hub apply`'s step: create the extension where the server can load it; True if feed tables are hypertables."""
    state = await timescale_state(conn)
    if not uses_timescaledb(state):
        return False
    if not state.installed:
        try:
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {TIMESCALEDB}")
        except asyncpg.PostgresError as exc:
            explained = extension_error(str(exc), state.config_file)
            if explained is None:
                raise
            raise ConfigError(explained) from None
    return True
