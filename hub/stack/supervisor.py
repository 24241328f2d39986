"""The local stack's supervisor: a server that crashed is started again, and the event is recorded.

`hub stack up` starts it as a process of its own (`hub stack supervise`); `hub stack down` stops it
before anything else. Every `stack_supervise_every_s` it looks at each server: one whose PID file is
there but whose process is gone crashed (a stop on purpose removes the PID file first: process.py),
and is started again as `hub stack up` starts it. After the Kafka broker restarts, the applied feeds'
topics are created again (the local broker keeps nothing), as `hub stack up` does. Each event is a
line in the supervisor's log and in `supervisor/events.jsonl`, which `hub stack status` shows. A
restart that fails is tried again after a doubling wait (at most 30 s).

Mosquitto is restarted behind a gate (broker_gate.py): partners' logins are refused until every running
ingest worker has subscribed again, so the restarted broker acknowledges nothing that nobody receives.
The gate is held by a task beside the checks, so other servers are still watched meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from hub.errors import HubError
from hub.settings import HubSettings, MqttAddress
from hub.stack import broker_gate
from hub.stack.events import Event, append_event
from hub.stack.local import SERVERS, LocalStack
from hub.stack.supervisor_process import events_path

log = logging.getLogger("hub.stack.supervisor")

MAX_BACKOFF_S = 30.0
GATE_POLL_S = 0.1  # how often the gate looks at the ingest workers' records
QUIET_EVENTS = ("started", "stopped", "topics recreated", "gate closed", "gate opened")  # logged at INFO


class StackSupervisor:
    def __init__(self, settings: HubSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.stack = LocalStack(settings, log=log.info)
        self.events = events_path(self.stack.state)
        self.clock = clock
        self.retry_at: dict[str, float] = {}  # a server whose restart failed: when to try again
        self.backoff: dict[str, float] = {}
        self.topics_pending = False  # the broker restarted but its topics could not be created yet
        self.gate_task: asyncio.Task[None] | None = None  # holds Mosquitto's restart gate until it opens

    async def __aenter__(self) -> StackSupervisor:
        self.record("supervisor", "started", f"watching {', '.join(SERVERS)}")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop_gate_task()  # a gate still closed stays recorded: the next supervisor opens it
        self.record("supervisor", "stopped")

    def record(self, server: str, event: str, detail: str = "", warn: bool | None = None) -> None:
        e = Event(self.clock(), server, event, detail)
        append_event(self.events, e)
        (log.warning if (event not in QUIET_EVENTS if warn is None else warn) else log.info)(
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
        self.watch_gate()

    async def restart(self, name: str) -> None:
        proc = self.stack.process(name)
        if name not in self.retry_at:
            try:
                old = proc.pid_path.read_text().strip()
            except OSError:  # stopped on purpose meanwhile
                return
            self.record(name, "crashed", f"pid {old} is gone; starting it again")
        if name == "mosquitto":
            await self.close_gate()
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
        if name == "mosquitto":
            self.watch_gate()

    # --- Mosquitto's restart gate (broker_gate.py) ----------------------------------------

    async def stop_gate_task(self) -> None:
        task, self.gate_task = self.gate_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def watch_gate(self) -> None:
        """Hold a closed gate (ours, or one a supervisor that stopped mid-gate left) while Mosquitto runs."""
        if (self.gate_task is not None and not self.gate_task.done()) or self.stack.process("mosquitto").pid() is None:
            return
        try:
            gate = broker_gate.read_gate(self.stack.state)
        except HubError as exc:
            log.warning("%s", exc)
            return
        if gate is not None:
            self.gate_task = asyncio.create_task(self.hold_gate(gate), name="mosquitto-restart-gate")

    async def close_gate(self) -> None:
        """Before the broker starts: partners' logins disabled in its file (it runs nothing meanwhile)."""
        await self.stop_gate_task()
        try:
            gate, newly = await asyncio.to_thread(broker_gate.close_gate, self.stack.state, self.clock())
        except (HubError, OSError) as exc:
            self.record("mosquitto", "gate not closed", f"{exc}; starting it anyway")
            return
        if newly:
            self.record(
                "mosquitto",
                "gate closed",
                f"{len(gate.logins)} partner and consumer logins refused until the ingest workers have subscribed "
                "again (the broker does not restore their shared subscriptions)",
            )

    async def hold_gate(self, gate: broker_gate.Gate) -> None:
        """Open the gate once every running ingest worker has a SUBACK later than the restart, none runs, or
        `stack_gate_timeout_s` has passed (then with a warning: what partners publish until the workers
        subscribe is acknowledged and dropped)."""
        bound = self.settings.stack_gate_timeout_s
        admin = MqttAddress.parse(self.stack.endpoints(self.settings.secrets())["mqtt_url"])
        while True:
            running, waiting = await asyncio.to_thread(broker_gate.ingest_workers, self.stack.state, gate.closed_at)
            held = self.clock() - gate.closed_at
            if not waiting or held >= bound:
                try:
                    await asyncio.to_thread(broker_gate.open_gate, self.stack.state, admin, gate)
                except (HubError, OSError) as exc:
                    log.debug("restart gate not opened yet: %s", exc)  # the broker is not answering yet
                    await asyncio.sleep(0.5)
                    continue
                break
            await asyncio.sleep(GATE_POLL_S)
        held = self.clock() - gate.closed_at
        logins = f"{len(gate.logins)} logins enabled"
        if waiting:
            self.record(
                "mosquitto",
                "gate opened",
                f"after {held:.1f} s without a SUBACK from {', '.join(waiting)}; {logins}: until they subscribe, "
                "what partners publish is acknowledged and not delivered",
                warn=True,
            )
        elif running:
            back = ", ".join(running)
            self.record("mosquitto", "gate opened", f"after {held:.1f} s: {back} subscribed again; {logins}")
        else:
            self.record("mosquitto", "gate opened", f"after {held:.1f} s: no ingest worker runs; {logins}")

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
