"""`hub run`: keep worker processes running, and stop them cleanly on SIGTERM / Ctrl-C.

The supervisor is a lean process of its own: `hub run` parses its options and then replaces
itself (exec, same PID) with `python -m hub.supervise ...`, which imports neither the CLI nor any
worker; each worker is a process of its own (`python -m hub.worker_process KIND INDEX`, hub/
worker_process.py) that imports only what its kind uses. Kinds are listed in hub/worker_registry.py.

Indexes: worker `i` of a kind is held by this process (`<kind>-slot-<i>` in the state directory's
run/ folder) for as long as it runs, across restarts of that worker: a second `hub run` against
the same stack on the same machine takes the next free indexes, so no two workers share a client
id (`hub-<kind>-<host>-<index>`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hub import log_format, worker_registry
from hub.errors import HubError
from hub.worker_registry import KINDS, SupervisorRecord, slot

log = logging.getLogger("hub.supervise")


def reserve_slots(
    state_dir: Path, host: str, kind: str, n: int, start: int = 0
) -> tuple[list[int], contextlib.ExitStack]:
    """The first `n` indexes of `kind` that no other `hub run` (or worker) on this machine holds.

    They stay reserved, across restarts of their workers, until the returned stack is closed (or
    this process ends). An index whose client id a worker started outside `hub run` holds (a test,
    say) is skipped too.
    """
    held = contextlib.ExitStack()
    indexes: list[int] = []
    i = start
    while len(indexes) < n:
        try:
            held.enter_context(worker_registry.claim(state_dir, slot(kind, i)))
        except HubError:
            i += 1
            continue
        if worker_registry.free(state_dir, worker_registry.worker_id(kind, host, i)):
            indexes.append(i)
        else:
            held.close()
            held = contextlib.ExitStack()
            for j in indexes:
                held.enter_context(worker_registry.claim(state_dir, slot(kind, j)))
        i += 1
    return indexes, held


@dataclass
class Slot:
    """One worker the supervisor keeps running: the same kind and index across restarts."""

    kind: str
    index: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None
    restarts: int = field(default=0)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"


def _worker_argv(kind: str, index: int, metrics_port: int) -> list[str]:
    return [sys.executable, "-m", "hub.worker_process", kind, str(index), "--metrics-port", str(metrics_port)]


# glibc serves an allocation above this from mmap, and gives it back when it is freed. By default it raises the
# threshold after each such free, so a worker's Kafka fetch buffers (up to 1 MiB each) came from the heap after the
# first few and their memory stayed with the process: a fixed threshold kept each landing worker about 5 MB smaller at
# its peak in `hub bench` (the 2+2 workers 269-279 MB against 280-300). The environment may set its own.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _worker_env() -> dict[str, str]:
    return {**MALLOC_ENV, **os.environ, "HUB_SUPERVISED": "1"}  # the worker records this process as its supervisor


def _prepare(kind: str, indexes: list[int]) -> None:
    """Run the kind's one-off step before its workers start (ingest: drain stale sessions), in a process of its own."""
    if KINDS[kind].prepare is None or not indexes:
        return
    argv = [sys.executable, "-m", "hub.worker_process", kind, ",".join(map(str, indexes)), "--prepare"]
    status = subprocess.run(argv, check=False, env=_worker_env()).returncode
    if status != 0:
        raise HubError(f"preparing the {kind} workers failed (exit status {status}); see the lines above")


class Supervisor:
    def __init__(
        self,
        state_dir: Path,
        slots: list[Slot],
        *,
        max_quick_failures: int = 5,
        quick_s: float = 10.0,
        restart_backoff_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.state_dir = state_dir
        self.slots = slots
        self.max_quick_failures = max_quick_failures
        self.quick_s = quick_s
        self.restart_backoff_s = restart_backoff_s
        self.stopping = False
        self.status = 0

    def start(self, s: Slot) -> None:
        s.process = subprocess.Popen(_worker_argv(s.kind, s.index, s.metrics_port), env=_worker_env())
        s.pidfd = os.pidfd_open(s.process.pid)
        s.started_at, s.restart_at = time.monotonic(), None

    def stop_all(self) -> None:
        for s in self.slots:
            if s.process is not None and s.process.poll() is None:
                s.process.send_signal(signal.SIGTERM)

    def on_signal(self, _sig: int, _frame: object) -> None:
        self.stopping = True
        self.stop_all()

    def _reap(self, s: Slot, now: float) -> None:
        assert s.process is not None
        if s.pidfd is not None:
            os.close(s.pidfd)
            s.pidfd = None
        ran_s = now - s.started_at
        s.quick_failures = s.quick_failures + 1 if ran_s < self.quick_s else 1
        if s.quick_failures >= self.max_quick_failures:
            log.error("worker %s failed %d times in a row right after starting; stopping", s.name, s.quick_failures)
            self.status, self.stopping = 1, True
            self.stop_all()
            return
        low, high = self.restart_backoff_s
        delay = min(high, low * 2 ** (s.quick_failures - 1))
        log.warning("worker %s exited (status %s) after %.0f s; restarting it in %.0f s",
                    s.name, s.process.returncode, ran_s, delay)  # fmt: skip
        s.restart_at = now + delay

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        for s in self.slots:
            self.start(s)
        while True:
            now = time.monotonic()
            for s in self.slots:
                if self.stopping or s.restart_at is not None or s.process is None or s.process.poll() is None:
                    continue
                self._reap(s, now)
            if self.stopping:
                for s in self.slots:
                    if s.process is not None:
                        s.process.wait()
                return self.status
            for s in self.slots:
                if s.restart_at is not None and s.restart_at <= now:
                    s.restarts += 1
                    self.start(s)
            waits = [s.restart_at - now for s in self.slots if s.restart_at is not None]
            fds = [s.pidfd for s in self.slots if s.pidfd is not None and s.restart_at is None]
            with contextlib.suppress(InterruptedError):
                select.select(fds, [], [], max(0.0, min(waits, default=1.0)))


def supervise(state_dir: Path, host: str, workers: dict[str, int], metrics_port: int = 0) -> int:
    """Run `workers` (kind -> how many) as processes and keep them running; SIGTERM / SIGINT stops them cleanly.

    A worker that dies (killed, crashed) is started again with the same index: an ingest worker
    resumes its persistent broker session, whose share of the shared subscription would otherwise
    wait there undelivered. A worker that keeps failing right after its start (5 times in a row: a
    configuration error, say) stops the others; the exit status is then 1. Metrics ports: with
    `metrics_port` 0 each worker takes a free one; otherwise the workers take that port and the next.
    """
    unknown = sorted(set(workers) - set(KINDS))
    if unknown:
        raise HubError(f"no worker kind {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
    with contextlib.ExitStack() as held:
        # Recorded first, so that `hub stack down` finds (and stops) this run even while it prepares.
        now = time.time()
        me = SupervisorRecord(os.getpid(), worker_registry.started_at(os.getpid()) or now, now, dict(workers))
        path = worker_registry.register_supervisor(state_dir, me)
        held.callback(worker_registry.unregister, path)
        slots: list[Slot] = []
        for kind, n in workers.items():
            indexes, reserved = reserve_slots(state_dir, host, kind, n)
            held.enter_context(reserved)
            _prepare(kind, indexes)
            for i in indexes:
                port = metrics_port + len(slots) if metrics_port else 0
                slots.append(Slot(kind, i, port))
        log.info("running %s", ", ".join(s.name for s in slots))
        return Supervisor(state_dir, slots).run()


def exec_argv(state_dir: Path, host: str, workers: dict[str, int], metrics_port: int, log_fmt: str) -> list[str]:
    """The command line `hub run` replaces itself with."""
    argv = [sys.executable, "-m", "hub.supervise", "--state-dir", str(state_dir.resolve()), "--host", host]
    argv += ["--metrics-port", str(metrics_port), "--log-format", log_fmt]
    for kind, n in workers.items():
        argv += ["--workers", f"{kind}={n}"]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub run", description="Keep the hub's workers running.")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--log-format", default="plain")
    parser.add_argument("--workers", action="append", default=[], help="KIND=N")
    args = parser.parse_args(argv)
    log_format.configure(args.log_format)
    workers: dict[str, int] = {}
    for item in args.workers:
        kind, _, n = item.partition("=")
        workers[kind] = int(n)
    os.environ["HUB_STATE_DIR"] = str(args.state_dir)  # the workers read the same state
    try:
        return supervise(args.state_dir, args.host, workers, args.metrics_port)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
