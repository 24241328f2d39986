"""One worker process: `python -m hub.worker_process KIND INDEX` (started by `hub run`, hub/supervise.py).

It imports only its kind's worker (hub/worker_registry.py `KINDS`), never the CLI, the HTTP API or
the Avro compatibility checker; serves its metrics and health routes (hub/metrics.py) from the
start; records itself for `hub stack status` and `hub stack down` (hub/worker_registry.py); waits,
saying so once, while a server it needs is down (also when it starts during an outage); and stops
cleanly on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from hub import log_format, metrics, worker_registry
from hub.db import connection
from hub.errors import HubError, ServerUnavailable
from hub.kafka import KafkaAdmin
from hub.outage import DriverNoise, Outages
from hub.retriable import retriable
from hub.settings import HubSettings
from hub.worker_registry import KINDS, WorkerRecord

HEARTBEAT_S = 1.0


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _mqtt_answers(settings: HubSettings) -> None:
    """The MQTT broker accepts a TCP connection (the worker's own login is made when it starts)."""
    address = settings.endpoints().mqtt()
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), 5)
    except (OSError, TimeoutError) as exc:
        raise ServerUnavailable("MQTT", f"{address.host}:{address.port}", str(exc) or type(exc).__name__) from exc
    writer.close()


async def until_reachable(settings: HubSettings, stop: asyncio.Event, log: logging.Logger, mqtt: bool = False) -> bool:
    """Wait until PostgreSQL and Kafka (and, for `mqtt`, the MQTT broker) answer, or `stop`; False if stopped first.

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
            if mqtt:
                await _mqtt_answers(settings)
                outages.back("MQTT")
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


def load(ref: str) -> Any:
    """ "module:name" -> the object (only the module of the kind that runs is imported)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _metrics_server(settings: HubSettings, port: int, log: logging.Logger) -> metrics.MetricsServer:
    try:
        return metrics.MetricsServer(settings.metrics_host, port)
    except OSError as exc:
        if port == 0:
            raise
        log.warning("metrics port %d is taken (%s); serving metrics on a free port instead", port, exc.strerror)
        return metrics.MetricsServer(settings.metrics_host, 0)


async def _heartbeat() -> None:
    while True:
        metrics.HEALTH.beat()
        await asyncio.sleep(HEARTBEAT_S)


async def serve(
    settings: HubSettings, kind: str, index: int, metrics_port: int = 0, stop: asyncio.Event | None = None
) -> None:
    """Run worker `index` of `kind` until `stop` (or SIGTERM / SIGINT), with its metrics server and record."""
    if kind not in KINDS:
        raise HubError(f"no worker kind {kind!r} (kinds: {', '.join(KINDS)})")
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    log = logging.getLogger(f"hub.{kind}")
    worker_class = load(KINDS[kind].worker)
    client_id = worker_registry.worker_id(kind, worker_registry.this_host(settings.worker_host), index)
    with _metrics_server(settings, metrics_port, log) as server:
        metrics.WORKER_INFO.labels(kind, str(index), client_id).set(1)
        me = os.getpid()
        record = WorkerRecord(
            kind, index, me, worker_registry.started_at(me) or time.time(), time.time(), client_id, server.address,
            os.getppid() if os.environ.get("HUB_SUPERVISED") else None,
        )  # fmt: skip
        path = worker_registry.register_worker(settings.state_dir, record)
        beating = asyncio.create_task(_heartbeat())
        try:
            await _run(settings, kind, index, worker_class, stop, log)
        finally:
            worker_registry.unregister(path)
            beating.cancel()


async def _run(
    settings: HubSettings, kind: str, index: int, worker_class: Any, stop: asyncio.Event, log: logging.Logger
) -> None:
    """Start the worker once its servers answer, and again if one goes away while it starts."""
    takes_index = "index" in inspect.signature(worker_class).parameters
    outages = Outages(log)
    while not stop.is_set():
        if not await until_reachable(settings, stop, log, mqtt=KINDS[kind].mqtt):
            return
        worker = (
            worker_class(settings, settings.endpoints(), index=index)
            if takes_index
            else worker_class(settings, settings.endpoints())
        )
        try:
            async with worker:
                metrics.HEALTH.started = True
                await worker.run(stop)
            return
        except Exception as exc:
            if not retriable(exc):
                raise
            metrics.HEALTH.started = False
            outages.failed(f"start the {kind} worker", exc)
            await asyncio.sleep(1.0)


def _for_throughput() -> None:
    """Tune the garbage collector of a worker process for its hot path.

    Per message a worker allocates a few short-lived, acyclic objects that reference counting
    frees. The cyclic collector's default (a pass every 700 net allocations) keeps walking the
    objects that live as long as the process; freezing those and collecting less often leaves
    cycles (rare here) to be found later instead of at every batch.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _prepare(settings: HubSettings, kind: str, indexes: list[int]) -> None:
    step = KINDS[kind].prepare
    if step is None:
        return
    result = load(step)(settings, indexes)
    if inspect.isawaitable(result):
        asyncio.run(result)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub worker", description="One worker process of `hub run`.")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("index", help="the worker's index (with --prepare: the indexes about to start, a,b,c)")
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--prepare", action="store_true", help="run the kind's step before its workers start")
    args = parser.parse_args(argv)
    try:
        settings = HubSettings()
    except HubError as exc:  # a setting it cannot take: one line naming the variable, no traceback
        print(f"hub {args.kind} worker: {exc}", file=sys.stderr)
        return 1
    log_format.configure(settings.log_format, filters=[DriverNoise()])
    try:
        if args.prepare:
            _prepare(settings, args.kind, [int(i) for i in args.index.split(",") if i])
            return 0
        _for_throughput()
        if args.kind == "share" and settings.share_nice:
            os.nice(settings.share_nice)
        asyncio.run(serve(settings, args.kind, int(args.index), args.metrics_port))
    except HubError as exc:
        logging.getLogger(f"hub.{args.kind}").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
