"""Run ingest, landing and share workers as processes, and stop them cleanly on SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.catalog import store as catalog
from hub.db import connection
from hub.errors import HubError
from hub.ingest import identity
from hub.ingest.worker import IngestWorker
from hub.kafka import KafkaAdmin
from hub.landing.worker import LandingWorker
from hub.outage import DriverNoise, Outages
from hub.retriable import retriable
from hub.settings import HubSettings
from hub.share.worker import ShareWorker

log = logging.getLogger("hub.supervise")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def until_reachable(settings: HubSettings, stop: asyncio.Event, log: logging.Logger) -> bool:
    """Wait until PostgreSQL and Kafka answer (or `stop`); False if stopped first.

    A worker started while one is down would fail while starting and be restarted again and again
    (a traceback each time, and `hub run` gives up after 5 quick failures): it waits instead, saying
    so once (hub/outage.py).
    """
    outages = Outages(log)
    ep = settings.endpoints()
    backoff = 0.2
    while not stop.is_set():
        try:
            async with connection(ep.database_url):
                outages.back("PostgreSQL")
            async with KafkaAdmin(settings, ep.kafka_bootstrap):
                outages.back("Kafka")
            return True
        except HubError as exc:
            if not retriable(exc):
                raise
            outages.failed("start a worker", exc)
        try:
            await asyncio.wait_for(stop.wait(), backoff)
        except TimeoutError:
            backoff = min(backoff * 2, 5.0)
    return False


async def run_ingest(index: int, stop: asyncio.Event | None = None) -> None:
    settings = HubSettings()
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    if not await until_reachable(settings, stop, logging.getLogger("hub.ingest")):
        return
    async with IngestWorker(settings, settings.endpoints(), index) as worker:
        await worker.run(stop)


async def run_land(stop: asyncio.Event | None = None) -> None:
    settings = HubSettings()
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    if not await until_reachable(settings, stop, logging.getLogger("hub.land")):
        return
    async with LandingWorker(settings, settings.endpoints()) as worker:
        await worker.run(stop)


async def run_share(stop: asyncio.Event | None = None) -> None:
    settings = HubSettings()
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    if not await until_reachable(settings, stop, logging.getLogger("hub.share")):
        return
    async with ShareWorker(settings, settings.endpoints()) as worker:
        await worker.run(stop)


def reserve_ingest_slots(settings: HubSettings, n: int) -> tuple[list[int], contextlib.ExitStack]:
    """The first `n` worker indices that no other `hub run` (or worker) on this machine holds.

    They stay reserved, across restarts of their workers, until the returned stack is closed (or this
    process ends): a second `hub run` against the same stack joins with the next indices, so no two
    workers ever share a client id.
    """
    held = contextlib.ExitStack()
    indices: list[int] = []
    i = 0
    while len(indices) < n:
        try:
            held.enter_context(identity.claim(settings, f"ingest-slot-{i}"))
        except HubError:
            i += 1
            continue
        if identity.free(settings, identity.worker_client_id(settings, i)):
            indices.append(i)
        else:  # a worker started outside `hub run` (a test, say) uses it
            held.close()
            held = _reclaim(settings, indices)
        i += 1
    return indices, held


def _reclaim(settings: HubSettings, indices: list[int]) -> contextlib.ExitStack:
    held = contextlib.ExitStack()
    for i in indices:
        held.enter_context(identity.claim(settings, f"ingest-slot-{i}"))
    return held


LEGACY_ID = re.compile(r"^hub-ingest-\d+$")  # client ids of versions that did not name the host


async def drain_stale_sessions(settings: HubSettings, mine: list[int]) -> list[str]:
    """End the broker sessions of this machine's ingest workers that no longer run, after taking what waits in them.

    A persistent session left behind stays a member of the shared subscription and keeps
    receiving its share of messages, which would then wait there undelivered. Sessions of other
    machines' workers are left to their own `hub run`; a session whose index another `hub run`
    here holds is running. Returns the sessions ended; one whose messages cannot reach Kafka now
    is left out of the shared group but kept (with its messages), and tried again next time.
    """
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn:
        await catalog.ensure_catalog(conn)
        rows = await conn.fetch("SELECT name FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active'")
    host = identity.this_host(settings)
    ended = []
    for name in sorted(r["name"] for r in rows):
        index = identity.index_on_host(name, host)
        if index in mine or (index is None and not LEGACY_ID.match(name)):
            continue
        try:
            with contextlib.ExitStack() as held:
                if index is not None:
                    held.enter_context(identity.claim(settings, f"ingest-slot-{index}"))
                async with IngestWorker(settings, ep, index or 0, drain_only=True, client_id=name) as worker:
                    pass  # entering resumes the old session; leaving takes what waits in it to Kafka and ends it
        except HubError as exc:
            if "is in use" in str(exc):
                continue  # its worker runs
            raise
        if worker.session_ended:
            ended.append(name)
            log.info("drained and ended stale ingest session %s", name)
        else:
            log.warning("stale ingest session %s still holds messages (Kafka down?); it is kept for now", name)
    return ended


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(DriverNoise())  # a broker away is said once by the worker, not per connection attempt


def _for_throughput() -> None:
    """Tune the garbage collector of a worker process for its hot path.

    Per message a worker allocates a few short-lived, acyclic objects that reference counting
    frees. The cyclic collector's default (a pass every 700 net allocations) keeps walking the
    objects that live as long as the process; freezing those and collecting less often leaves
    cycles (rare here) to be found later instead of at every batch.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _ingest_process(index: int) -> None:
    _logging()
    _for_throughput()
    asyncio.run(run_ingest(index))


def _land_process() -> None:
    _logging()
    _for_throughput()
    asyncio.run(run_land())


def _share_process() -> None:
    _logging()
    _for_throughput()
    asyncio.run(run_share())


@dataclass
class _Slot:
    """One worker the supervisor keeps running: the same target and index across restarts."""

    name: str
    target: Callable[..., None]
    args: tuple[int, ...]
    process: Any = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None


def supervise(
    ingest_workers: int,
    land_workers: int,
    share_workers: int = 0,
    *,
    max_quick_failures: int = 5,
    quick_s: float = 10.0,
    restart_backoff_s: tuple[float, float] = (1.0, 30.0),
) -> int:
    """Run the workers as processes and keep them running; on SIGTERM / SIGINT stop them all cleanly.

    A worker that dies (killed, crashed) is started again with the same index: an ingest
    worker resumes its persistent broker session, whose share of the shared subscription
    would otherwise wait there undelivered (and be dropped when the session expires). A
    worker that keeps failing within `quick_s` of its start (`max_quick_failures` times in a
    row: a configuration error, say) stops the others; the exit status is then 1.
    """
    _logging()
    settings = HubSettings()
    indices, reserved = reserve_ingest_slots(settings, ingest_workers)
    with reserved:
        return _supervise(indices, land_workers, max_quick_failures, quick_s, restart_backoff_s, share_workers)


def _supervise(
    indices: list[int],
    land_workers: int,
    max_quick_failures: int,
    quick_s: float,
    restart_backoff_s: tuple[float, float],
    share_workers: int = 0,
) -> int:
    if indices:
        asyncio.run(drain_stale_sessions(HubSettings(), indices))
    ctx = mp.get_context("spawn")
    slots = [
        *(_Slot(f"land-{i}", _land_process, ()) for i in range(land_workers)),
        *(_Slot(f"ingest-{i}", _ingest_process, (i,)) for i in indices),
        *(_Slot(f"share-{i}", _share_process, ()) for i in range(share_workers)),
    ]

    def start(slot: _Slot) -> None:
        slot.process = ctx.Process(target=slot.target, args=slot.args, name=f"hub-{slot.name}", daemon=False)
        slot.process.start()
        slot.started_at, slot.restart_at = time.monotonic(), None

    stopping = False
    status = 0

    def stop_all() -> None:
        for slot in slots:
            if slot.process is not None and slot.process.is_alive() and slot.process.pid:
                os.kill(slot.process.pid, signal.SIGTERM)

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in slots:
        start(slot)
    while True:
        now = time.monotonic()
        for slot in slots:
            p = slot.process
            if stopping or p.is_alive() or slot.restart_at is not None:
                continue
            ran_s = now - slot.started_at
            slot.quick_failures = slot.quick_failures + 1 if ran_s < quick_s else 1
            if slot.quick_failures >= max_quick_failures:
                log.error(
                    "worker %s failed %d times in a row right after starting; stopping", slot.name, max_quick_failures
                )
                status, stopping = 1, True
                stop_all()
                break
            low, high = restart_backoff_s
            delay = min(high, low * 2 ** (slot.quick_failures - 1))
            log.warning(
                "worker %s exited (status %s) after %.0f s; restarting it in %.0f s",
                slot.name,
                p.exitcode,
                ran_s,
                delay,
            )
            slot.restart_at = now + delay
        if stopping:
            for slot in slots:
                if slot.process.is_alive():
                    slot.process.join()
            return status
        for slot in slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                start(slot)
        waits = [s.restart_at - now for s in slots if s.restart_at is not None]
        mp_connection.wait(
            [s.process.sentinel for s in slots if s.process.is_alive()], max(0.0, min(waits, default=1.0))
        )
