"""`hub maintain`: housekeeping an operator runs on a schedule."""

from __future__ import annotations

import asyncio

from hub.cli.common import console, one_line_errors, settings
from hub.control.retention import enforce_retention
from hub.db import connection


@one_line_errors
def maintain() -> None:
    """Delete rows older than each feed's retention (plain PostgreSQL; TimescaleDB does it by itself)."""

    async def run() -> None:
        async with connection(settings().endpoints().database_url) as conn:
            by_timescale, expired = await enforce_retention(conn)
        if by_timescale:
            console.print("TimescaleDB enforces retention with its own policies: nothing to do")
            return
        for e in expired:
            console.print(f"{e.table:45} retention {e.retention_days:g} d: deleted {e.deleted} rows", highlight=False)

    asyncio.run(run())
