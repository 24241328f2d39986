"""Run ingest and landing workers as processes, and stop them cleanly on SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from hub.control import catalog
from hub.db import connection
from hub.ingest.worker import IngestWorker, client_id
from hub.landing.worker import LandingWorker
from hub.settings import HubSettings

log = logging.getLogger("hub.services")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_ingest(index: int, stop: asyncio.Event | None = None) -> None:
    settings = HubSettings()
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    async with IngestWorker(settings, settings.endpoints(), index) as worker:
        await worker.run(stop)


async def run_land(stop: asyncio.Event | None = None) -> None:
    settings = HubSettings()
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    async with LandingWorker(settings, settings.endpoints()) as worker:
        await worker.run(stop)


async def drain_stale_sessions(settings: HubSettings, keep: int) -> list[str]:
    """End the broker sessions of ingest workers that no longer run, after taking what waits in them.

    A persistent session left behind stays a member of the shared subscription and keeps
    receiving its share of messages, which would then wait there undelivered.
    """
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn:
        await catalog.ensure_catalog(conn)
        rows = await conn.fetch("SELECT name FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active'")
    wanted = {client_id(i) for i in range(keep)}
    stale = sorted(r["name"] for r in rows if r["name"] not in wanted)
    for name in stale:
        index = int(name.rsplit("-", 1)[1])
        async with IngestWorker(settings, ep, index, drain_only=True):
            pass  # entering connects the old session and leaving drains and ends it
        log.info("ended stale ingest session %s", name)
    return stale


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _ingest_process(index: int) -> None:
    _logging()
    asyncio.run(run_ingest(index))


def _land_process() -> None:
    _logging()
    asyncio.run(run_land())


def supervise(ingest_workers: int, land_workers: int) -> int:
    """Start the workers as processes; on a signal stop them all cleanly. Returns an exit status."""
    _logging()
    if ingest_workers:
        asyncio.run(drain_stale_sessions(HubSettings(), ingest_workers))
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    targets: list[tuple[Callable[..., None], tuple[int, ...]]] = [
        *((_land_process, ()) for _ in range(land_workers)),
        *((_ingest_process, (i,)) for i in range(ingest_workers)),
    ]
    for target, args in targets:
        p = ctx.Process(target=target, args=args, daemon=False)
        p.start()
        procs.append(p)
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid:
                import os

                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    for p in procs:
        p.join()
        if p.exitcode not in (0, None) and not stopping:
            status = 1
    return status


Runner = Callable[[], Awaitable[None]]
