"""The hub's running workers and their supervisors, as small files under the state directory.

Every worker process writes one record when it has started (`<state>/run/workers/<kind>-<pid>.json`:
kind, index, pid, client id, since, metrics address, its supervisor) and removes it when it ends;
every `hub run` writes one for itself (`<state>/run/supervisors/<pid>.json`). `hub stack status`
lists them; `hub stack down` stops the supervisors, and any worker left without one, before the
servers. A record whose process is gone (killed with -9) is ignored, and removed, when read: a
record names its process by PID *and* start time, so a PID the system reuses is never taken for it.

Slots: `claim` holds a name (a worker index of a kind, a client id) for this process with a lock
file the kernel releases however the process ends, so two processes on one machine never take the
same one. This module imports no settings model: the lean `hub run` supervisor uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hub.errors import HubError


@dataclass(frozen=True)
class Kind:
    """A kind of worker `hub run` runs: where its worker class is, and what runs once before its workers start.

    `worker` is "module:Class", an async context manager taking (settings, endpoints, index=...) with
    `run(stop)`; imported only in that kind's processes, so a worker loads only what it uses.
    `prepare` ("module:function", optional) is run in a process of its own with (settings, indices)
    before the kind's workers start.
    """

    worker: str
    prepare: str | None = None
    mqtt: bool = False  # it waits for the MQTT broker too before it starts


# Every kind of worker. A new kind is one line here (and a `hub run <kind>` command).
KINDS: dict[str, Kind] = {
    "ingest": Kind("hub.ingest.worker:IngestWorker", prepare="hub.ingest.stale_sessions:drain", mqtt=True),
    "land": Kind("hub.landing.worker:LandingWorker"),
    "share": Kind("hub.share.worker:ShareWorker", mqtt=True),
}


def host_label(host: str) -> str:
    """A host name as one safe part of a client id: lower-case letters, digits and '-', at most 40.

    A longer name keeps its first 31 characters and a hash of the whole, so two pods whose names differ
    only at the end (`...-7d9f8c6b5d-x2x7q`, `...-7d9f8c6b5d-k8s2p`) never share a label.
    """
    label = re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")
    if len(label) > 40:
        # Imported here: hashlib loads OpenSSL's libcrypto (about 4 MB resident), which the lean
        # `hub run` supervisor needs for nothing else.
        import hashlib

        label = label[:31].strip("-") + "-" + hashlib.sha256(label.encode()).hexdigest()[:8]
    return label or "host"


def this_host(worker_host: str | None) -> str:
    """The host part of this machine's worker ids: HUB_WORKER_HOST if set, else the host name."""
    return worker_host or socket.gethostname()


def worker_id(kind: str, host: str, index: int) -> str:
    """The one place a worker's client id is made: `hub-<kind>-<host>-<index>`, unique across hosts and processes.

    The host tells machines (and containers and pods, whose host name is their own) apart, the index
    the workers of one kind on one machine (held with `claim`).
    """
    if index < 0:
        raise ValueError(f"worker index {index} is negative")
    return f"hub-{kind}-{host_label(host)}-{index}"


def slot(kind: str, index: int) -> str:
    """The name `hub run` claims for worker `index` of `kind` on this machine."""
    return f"{kind}-slot-{index}"


def run_dir(state_dir: Path) -> Path:
    d = state_dir.resolve() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def claim(state_dir: Path, name: str) -> Iterator[None]:
    """Hold `name` for this process (a lock file the kernel releases when the process ends, however it ends).

    Raises HubError at once if another process holds it.
    """
    path = run_dir(state_dir) / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise HubError(
                f"{name} is in use by process {holder} on this machine (state {state_dir}); "
                "stop it, or let `hub run` pick the next free worker index"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def free(state_dir: Path, name: str) -> bool:
    """Whether no process holds `name` right now."""
    try:
        with claim(state_dir, name):
            return True
    except HubError:
        return False


def started_at(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), None if it is gone or a zombie.

    Read from /proc where there is one, as psutil computes it (boot time + start ticks), so that the `hub run`
    supervisor need not load psutil (1.3 MB resident in every supervisor); psutil elsewhere.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # gone
        return _started_at_psutil(pid)
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    if fields[0] == "Z":
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@functools.cache  # read once per process: every listing of records checks each one's start time
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise HubError("/proc/stat has no btime line")


def _started_at_psutil(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


@dataclass(frozen=True)
class WorkerRecord:
    kind: str  # ingest, land, share, ...
    index: int
    pid: int
    started: float  # the process's start time: tells it from a later process with the same PID
    since: float  # when the worker was ready (seconds since the epoch)
    client_id: str | None  # the MQTT client id or Kafka client id it connects with
    metrics: str | None  # host:port of its metrics and health server
    supervisor: int | None  # the PID of the `hub run` that started it
    # Ingest: when the broker last confirmed its subscription (SUBACK, seconds since the epoch). The local stack's
    # restart gate (hub/stack/broker_gate.py) compares it with a broker's restart.
    subscribed_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"


@dataclass(frozen=True)
class SupervisorRecord:
    pid: int
    started: float
    since: float
    workers: dict[str, int]  # kind -> how many it keeps running


def _dir(state_dir: Path, what: str) -> Path:
    d = run_dir(state_dir) / what
    d.mkdir(exist_ok=True)
    return d


def _write(path: Path, data: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # readers never see half a record
    return path


def register_worker(state_dir: Path, record: WorkerRecord) -> Path:
    return _write(_dir(state_dir, "workers") / f"{record.kind}-{record.pid}.json", asdict(record))


def register_supervisor(state_dir: Path, record: SupervisorRecord) -> Path:
    return _write(_dir(state_dir, "supervisors") / f"{record.pid}.json", asdict(record))


def note_subscribed(state_dir: Path, kind: str, pid: int, at: float) -> None:
    """Record in worker `pid`'s record that the broker confirmed its subscription at `at`; nothing if it has none
    (a worker run outside `hub run`, as tests do)."""
    path = _dir(state_dir, "workers") / f"{kind}-{pid}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        _write(path, {**data, "subscribed_at": at})


def unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def _alive_records(state_dir: Path, what: str) -> Iterator[dict[str, Any]]:
    for path in sorted(_dir(state_dir, what).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            pid, started = int(data["pid"]), float(data["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        now = started_at(pid)
        if now is None or abs(now - started) > 1.0:
            path.unlink(missing_ok=True)  # its process is gone: killed without a chance to remove it
            continue
        yield data


def running_workers(state_dir: Path) -> list[WorkerRecord]:
    """Every worker of this state directory whose process runs, by kind and index."""
    found = [WorkerRecord(**data) for data in _alive_records(state_dir, "workers")]
    return sorted(found, key=lambda w: (w.kind, w.index, w.pid))


def running_supervisors(state_dir: Path) -> list[SupervisorRecord]:
    return [SupervisorRecord(**data) for data in _alive_records(state_dir, "supervisors")]
