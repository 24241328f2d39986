"""The workers running against this state directory, as `hub stack status` shows them and `hub stack down` stops them.

Every `hub run` (the user's own too, or the one `hub demo` started) and every worker process records
itself under the state directory (hub/worker_registry.py). Health is what the worker's own health
route says (hub/metrics.py): ready, starting, or waiting for a server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hub.worker_registry import WorkerRecord, running_supervisors, running_workers


@dataclass
class WorkerStatus:
    kind: str
    index: int
    pid: int
    client_id: str | None
    since: float
    metrics: str | None
    supervisor: int | None
    healthy: bool
    health: str  # ready | starting | waiting for <server> (N s) | not answering
    rss_mb: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "pid": self.pid,
            "client_id": self.client_id,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "healthy": self.healthy,
            "health": self.health,
            "metrics": f"http://{self.metrics}/metrics" if self.metrics else None,
            "rss_mb": round(self.rss_mb, 1) if self.rss_mb is not None else None,
            "supervisor": self.supervisor,
        }


def _ask(address: str, timeout_s: float) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{address}/health/ready", timeout=timeout_s) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}


def health_of(record: WorkerRecord, timeout_s: float = 1.0) -> tuple[bool, str]:
    if not record.metrics:
        return False, "no health route"
    try:
        status, body = _ask(record.metrics, timeout_s)
    except (OSError, ValueError) as exc:
        return False, f"not answering ({type(exc).__name__})"
    if status == 200:
        return True, "ready"
    waiting = body.get("waiting_for_s") or {}
    if waiting:
        return False, "waiting for " + ", ".join(f"{server} ({seconds:.0f} s)" for server, seconds in waiting.items())
    return False, "starting"


def _rss_mb(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 1e6
    except psutil.Error:
        return None


def worker_statuses(state_dir: Path) -> list[WorkerStatus]:
    out = []
    for r in running_workers(state_dir):
        healthy, health = health_of(r)
        out.append(
            WorkerStatus(
                r.kind, r.index, r.pid, r.client_id, r.since, r.metrics, r.supervisor, healthy, health, _rss_mb(r.pid)
            )
        )
    return out


def _running(p: psutil.Process) -> bool:
    """Still doing something: an ended process whose parent has not reaped it yet (a zombie) is done."""
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each has ended (zombies count as ended: psutil's wait_procs waits for a zombie that is not
    our child until the time-out), at most `timeout_s`; returns those still running."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _running(p)]
    return alive


def _end(pids: list[int], timeout_s: float) -> None:
    """SIGTERM each, wait for all up to `timeout_s`, then SIGKILL what is left."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.terminate()
            procs.append(p)
        except psutil.Error:
            continue
    alive = _wait(procs, timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            continue
    _wait(alive, 5)


def stop_workers(state_dir: Path, timeout_s: float = 60.0) -> list[str]:
    """Stop every `hub run` of this state directory (it stops its workers cleanly), then any worker left alone.

    Returns what was stopped, e.g. ["hub run (pid 4242)", "ingest-0"]. Workers end their broker
    sessions and finish their batch on SIGTERM, hence the generous time-out.
    """
    stopped = []
    supervisors = running_supervisors(state_dir)
    workers = running_workers(state_dir)
    _end([s.pid for s in supervisors], timeout_s)
    stopped += [f"hub run (pid {s.pid})" for s in supervisors]
    left = running_workers(state_dir)  # a worker started by hand, or one whose supervisor was killed
    _end([w.pid for w in left], timeout_s)
    stopped += [w.name for w in workers]
    return stopped
