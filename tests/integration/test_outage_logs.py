"""While PostgreSQL is down, the workers log one line when it goes away and one when it is back; the retries
in between are quiet (DEBUG), and no driver traceback is logged.

It used to be a warning per retry, and asyncpg's pool logged a traceback each time it tried to restore
its connection floor.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from hub.settings import HubSettings
from hub.stack import servers
from hub.stack.process import free_port
from hub.worker_process import until_reachable
from tests.integration.support import eventually, running_ingest, running_land


def worker_lines(records: list[logging.LogRecord], level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= level and r.name.split(".")[0] in ("hub", "asyncpg")]


async def test_a_database_outage_is_two_log_lines_per_worker_not_one_per_retry(
    applied: HubSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = applied.replace(land_retry_max_s=0.5, catalog_reload_s=0.5)
    state = settings.state_dir.resolve()
    try:
        async with running_land(settings) as landing, running_ingest(settings) as ingest:
            await asyncio.sleep(1.0)  # both settled: subscribed, partitions assigned
            caplog.clear()
            caplog.set_level(logging.DEBUG)
            await asyncio.to_thread(servers.stop_postgres, state)
            retries = landing.retries
            assert await eventually(lambda: landing.retries >= retries + 6, timeout_s=30), "it keeps retrying"
            assert await eventually(lambda: len(ingest.outages.away) == 1)
            await asyncio.sleep(2.0)  # several catalog reloads fail too
            await asyncio.to_thread(servers.start_postgres, state, settings.pg_port)
            assert await eventually(lambda: not landing._retrying.outages.away and not ingest.outages.away, 30)
            records = list(caplog.records)
    finally:
        if servers.postgres_process(state).pid() is None:
            servers.start_postgres(state, settings.pg_port)

    lines = worker_lines(records, logging.WARNING)  # INFO keeps telling what happens (e.g. a rebalance)
    by_logger = {name: [r.getMessage() for r in lines if r.name == name] for name in ("hub.land", "hub.ingest")}
    for name, messages in by_logger.items():
        assert len(messages) == 2, (name, messages)
        assert messages[0].startswith("PostgreSQL is unavailable (cannot ") and "retrying quietly" in messages[0]
        assert messages[1].startswith("PostgreSQL is back after ")
    assert [r.getMessage() for r in lines if r.name not in by_logger] == []  # asyncpg's pool among them
    assert not [r for r in lines if r.exc_info], "no traceback"
    quiet = [r for r in records if r.levelno == logging.DEBUG and "still unavailable" in r.getMessage()]
    assert len(quiet) >= 5, "the retries happened, at DEBUG"


async def test_a_worker_started_while_the_database_is_down_waits_for_it_saying_so_once(
    applied: HubSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to fail while starting, a traceback each time `hub run` started it again, until `hub run` gave up."""
    nothing_there = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/hub"
    down = applied.replace(database_url=nothing_there)
    log = logging.getLogger("hub.land")
    caplog.set_level(logging.DEBUG)
    stop = asyncio.Event()
    waiting = asyncio.create_task(until_reachable(down, stop, log))
    assert await eventually(lambda: len([r for r in caplog.records if "still unavailable" in r.getMessage()]) >= 3)
    assert not waiting.done()
    stop.set()
    assert await waiting is False  # a stop request ends the wait
    lines = worker_lines(caplog.records, logging.WARNING)
    assert [r.getMessage().split(" (")[0] for r in lines] == ["PostgreSQL is unavailable"]
    assert "cannot start a worker" in lines[0].getMessage() and not lines[0].exc_info
    assert await until_reachable(applied, asyncio.Event(), log) is True
