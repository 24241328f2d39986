"""Faults with a stream in flight: kill -9 of each worker and server, and servers paused (SIGSTOP).

Each scenario publishes a steady stream, faults one component a few seconds in, keeps publishing
while it recovers (the local stack's supervisor restarts a server, `hub run` a worker), then
reconciles every message and measures recovery: from the end of the fault to the first row of a
message sent after it began.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.drill.reconcile import Result, judge_stream
from hub.drill.stack import PARTNER, DrillStack
from hub.drill.stream import DUPLICATES_SQL, Stream
from hub.errors import HubError
from hub.stack.events import read_events
from hub.stack.supervisor_process import events_path


@dataclass(frozen=True)
class Pace:
    """How long and how fast each stream runs (`--quick` makes it small)."""

    rate: float  # messages per second
    warm_s: float  # streaming before the fault
    after_s: float  # streaming after the fault ended
    pause_s: float  # how long a server stays stopped (SIGSTOP)
    # How long the reconciliation waits for the last rows without progress: longer than any recovery (a killed
    # landing worker's partitions wait ~20 s for its consumer group session to expire).
    settle_s: float


QUICK = Pace(rate=150, warm_s=2, after_s=4, pause_s=10, settle_s=30)
FULL = Pace(rate=400, warm_s=5, after_s=20, pause_s=30, settle_s=45)


def stream_scenario(
    stack: DrillStack,
    pace: Pace,
    name: str,
    action: str,
    fault: Callable[[Result], tuple[float, float]],
    *,
    recovery: bool = True,
) -> Result:
    """Publish, run `fault` (it returns when the fault began and ended, epoch seconds), publish on, reconcile.

    `recovery`: the fault stops the data path, so a message sent after it must land again (abuse
    scenarios, which must not disturb it, say False: their recovery is not measured)."""
    result = Result(name, action)
    started = time.time()
    duplicates_before = int(asyncio.run(stack.fetchval(DUPLICATES_SQL, PARTNER)))
    stream = Stream(stack, prefix=name.replace(" ", "-"), rate=pace.rate)
    stream.start()
    try:
        time.sleep(pace.warm_s)
        try:
            fault_at, fault_end = fault(result)
        except HubError as exc:
            result.fail(str(exc))
            fault_at = fault_end = time.time()
        time.sleep(pace.after_s)
    finally:
        stream.stop(ack_timeout_s=max(30.0, pace.settle_s))
    asyncio.run(stream.settle(pace.settle_s, timeout_s=120))
    result.tally, result.recovery_s = asyncio.run(stream.reconcile(started, duplicates_before, fault_at, fault_end))
    if stream.lost:
        first, last = (round(stream.sent_at[k] - fault_at, 2) for k in (min(stream.lost), max(stream.lost)))
        result.notes.append(f"the lost were sent {first} s to {last} s after the fault began")
    if stream.refused_connects:
        result.notes.append(f"the device's CONNECT was refused {stream.refused_connects} times; it kept its messages")
    if result.recovery_s is not None:
        result.recovery_s = round(result.recovery_s, 1)
    judge_stream(result, expect_dead=0)  # valid readings: a dead letter would be a refusal caused by the fault
    if not recovery:
        result.recovery_s = None
    elif result.recovery_s is None:
        result.fail("no message sent after the fault landed")
    result.seconds = round(time.time() - started, 1)
    return result


def kill_worker(stack: DrillStack, kind: str) -> Callable[[Result], tuple[float, float]]:
    def fault(_r: Result) -> tuple[float, float]:
        pid = stack.worker_pid(kind)
        if pid is None:
            raise HubError(f"no {kind} worker was running to kill")
        os.kill(pid, signal.SIGKILL)
        t = time.time()
        return t, t

    return fault


def kill_server(stack: DrillStack, name: str) -> Callable[[Result], tuple[float, float]]:
    def fault(_r: Result) -> tuple[float, float]:
        pids = stack.server_pids(name)
        if not pids:
            raise HubError(f"{name} was not running")
        os.kill(pids[0], signal.SIGKILL)
        t = time.time()
        stack.wait_server(name)
        return t, t

    return fault


def pause_server(stack: DrillStack, name: str, seconds: float) -> Callable[[Result], tuple[float, float]]:
    def fault(_r: Result) -> tuple[float, float]:
        pids = stack.server_pids(name)
        if not pids:
            raise HubError(f"{name} was not running")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        began = time.time()
        try:
            time.sleep(seconds)
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        return began, time.time()

    return fault


WORKERS = {"ingest": "ingest worker", "land": "landing worker", "share": "share worker"}
SERVERS = {"mosquitto": "Mosquitto", "kafka": "Kafka broker (Tansu)", "postgres": "PostgreSQL"}


def gate_note(stack: DrillStack, since: float) -> str:
    """What the stack's supervisor says of Mosquitto's restart gate after `since` (hub/stack/broker_gate.py)."""
    for e in read_events(events_path(stack.state)):
        if e.at >= since and e.server == "mosquitto" and e.event == "gate opened":
            return f"restart gate opened {e.detail}"
    return "the restart gate did not open"


def run_faults(stack: DrillStack, pace: Pace, log: Callable[[str], None], quick: bool) -> list[Result]:
    out: list[Result] = []
    for kind, what in WORKERS.items():
        log(f"kill -9 of the {what}")
        r = stream_scenario(stack, pace, f"kill {kind}", f"kill -9 of the {what} mid-stream", kill_worker(stack, kind))
        if kind == "share":
            r.notes.append("reconciled: ingest and landing; the share topic is not read back")
        out.append(r)
    for name, what in SERVERS.items():
        log(f"kill -9 of {what}")
        began = time.time()
        r = stream_scenario(
            stack,
            pace,
            f"kill {name}",
            f"kill -9 of {what} mid-stream; the stack's supervisor restarts it",
            kill_server(stack, name),
        )
        if name == "mosquitto":
            r.notes.append(gate_note(stack, began))
        out.append(r)
    for name, what in SERVERS.items():
        log(f"{what} paused for {pace.pause_s:.0f} s")
        action = f"{what} paused (SIGSTOP) for {pace.pause_s:.0f} s" + (
            " (quick: the full drill pauses 30 s)" if quick else ""
        )
        out.append(stream_scenario(stack, pace, f"pause {name}", action, pause_server(stack, name, pace.pause_s)))
    return out
