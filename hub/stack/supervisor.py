"""The local stack's supervisor: a server that crashed is started again, and the event is recorded.

`hub stack up` starts it as a process of its own (`hub stack supervise`); `hub stack down` stops it
before anything else. Every `stack_supervise_every_s` it looks at each server: one whose PID file is
there but whose process is gone crashed (a stop on purpose removes the PID file first: process.py),
and is started again as `hub stack up` starts it. After the Kafka broker restarts, the applied feeds'
topics are created again (the local broker keeps nothing), as `hub stack up` does. Each event is a
line in the supervisor's log and in `supervisor/events.jsonl`, which `hub stack status` shows. A
restart that fails is tried again after a doubling wait (at most 30 s).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from hub.errors import HubError
from hub.settings import HubSettings
from hub.stack.events import Event, append_event
from hub.stack.local import SERVERS, LocalStack
from hub.stack.supervisor_process import events_path

log = logging.getLogger("hub.stack.supervisor")

MAX_BACKOFF_S = 30.0


class StackSupervisor:
    def __init__(self, settings: HubSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.stack = LocalStack(settings, log=log.info)
        self.events = events_path(self.stack.state)
        self.clock = clock
        self.retry_at: dict[str, float] = {}  # a server whose restart failed: when to try again
        self.backoff: dict[str, float] = {}
        self.topics_pending = False  # the broker restarted but its topics could not be created yet

    async def __aenter__(self) -> StackSupervisor:
        self.record("supervisor", "started", f"watching {', '.join(SERVERS)}")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.record("supervisor", "stopped")

    def record(self, server: str, event: str, detail: str = "") -> None:
        e = Event(self.clock(), server, event, detail)
        append_event(self.events, e)
        (log.info if event in ("started", "stopped", "topics recreated") else log.warning)(
            "%s %s%s", server, event, f": {detail}" if detail else ""
        )

    async def run(self, stop: asyncio.Event) -> None:
        every = self.settings.stack_supervise_every_s
        while not stop.is_set():
            await self.check()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass

    async def check(self) -> None:
        for name in SERVERS:
            proc = self.stack.process(name)
            if proc.crashed() and time.monotonic() >= self.retry_at.get(name, 0.0):
                await self.restart(name)
        if self.topics_pending and self.stack.process("kafka").pid() is not None:
            await self.recreate_topics()

    async def restart(self, name: str) -> None:
        proc = self.stack.process(name)
        if name not in self.retry_at:
            try:
                old = proc.pid_path.read_text().strip()
            except OSError:  # stopped on purpose meanwhile
                return
            self.record(name, "crashed", f"pid {old} is gone; starting it again")
        started = time.monotonic()
        try:
            created = await asyncio.to_thread(self.stack.start_server, name)
        except (HubError, OSError) as exc:
            if name == "kafka" and proc.pid() is not None:  # the broker runs; its topics could not be created yet
                self.topics_pending = True
                self.record(name, "topics not recreated", f"{exc}; trying again")
            else:
                wait = min(self.backoff.get(name, 0.5) * 2, MAX_BACKOFF_S)
                self.backoff[name], self.retry_at[name] = wait, time.monotonic() + wait
                self.record(name, "restart failed", f"{exc}; trying again in {wait:.0f} s")
                return
        else:
            if name == "kafka":
                self.record(name, "topics recreated", f"{len(created)} topics of applied feeds")
        self.retry_at.pop(name, None)
        self.backoff.pop(name, None)
        self.record(name, "restarted", f"in {time.monotonic() - started:.1f} s (pid {proc.pid()})")

    async def recreate_topics(self) -> None:
        try:
            created = await asyncio.to_thread(self.stack.recreate_topics)
        except (HubError, OSError) as exc:
            log.debug("topics not recreated yet: %s", exc)
            return
        self.topics_pending = False
        self.record("kafka", "topics recreated", f"{len(created)} topics of applied feeds")


async def supervise_stack(settings: HubSettings) -> None:
    """Run the supervisor until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with StackSupervisor(settings) as supervisor:
        await supervisor.run(stop)
