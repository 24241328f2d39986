"""Start, find and stop one server process that the hub owns.

A process is ours only if its PID file exists *and* the live process still runs the
binary we started: a PID reused by the system is never signalled.

The PID file also says what is wanted: it is written when a server is started and removed
*before* it is stopped on purpose, so a PID file whose process is gone means a crash, which the
stack's supervisor (supervisor.py) repairs.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from hub.errors import StackError


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(
            f"{name} not found on PATH: install it with `apt-get install {package}` "
            "(the README's setup command does this)"
        )
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout_s: float, proc: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_in_use(port):
            return
        if proc is not None and proc.pid() is None:
            raise StackError(f"{proc.name} exited during start-up; see {proc.log_path}: {proc.log_tail()}")
        time.sleep(0.05)
    raise StackError(f"nothing answers on 127.0.0.1:{port} after {timeout_s:.0f} s")


# Ports handed out by free_port, below the kernel's range for outgoing connections and above the local stack's
# defaults (15432, 18081, 18830, 19092).
PORTS_FROM = 20000
_CLAIMS: list[int] = []  # lock files of the ports this process handed out, held until it ends


def _outgoing_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _claim(port: int) -> bool:
    """Hold `port` for this process's lifetime (a lock file the kernel releases when it ends), if nobody holds it."""
    claims = Path(tempfile.gettempdir()) / "hub-ports"
    claims.mkdir(mode=0o1777, exist_ok=True)
    fd = os.open(claims / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS.append(fd)
    return True


def free_port() -> int:
    """A loopback port for a server of a private stack, free now and free until that server binds it.

    A port the kernel picks with bind(0) is one it also gives outgoing connections, and any process may be handed
    it again once we close the probe: with test processes and their clients running side by side, a server then
    found its port taken ("Address already in use"). So the port comes from below the outgoing range, and is claimed
    with a lock file for as long as this process runs, so no other process on the machine picks it too.
    """
    low, _high = _outgoing_range()
    for _ in range(500):
        port = random.randrange(PORTS_FROM, max(low, PORTS_FROM + 1000))
        if not _claim(port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # something that does not claim ports listens there: keep the claim, try another
        return port
    raise StackError(f"no free port between {PORTS_FROM} and {low} after 500 tries")


@dataclass
class ManagedProcess:
    """A server process with a PID file and a log in the state directory."""

    name: str
    state_dir: Path
    binary_marker: str  # a string the live process's command line must contain

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID if our process is alive, else None (a PID file left by a crash stays: see `crashed`)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self.runs_as_ours(pid) else None

    def runs_as_ours(self, pid: int) -> bool:
        try:
            proc = psutil.Process(pid)
            cmdline = " ".join(proc.cmdline())
            # Right after fork the command line is briefly empty; only a non-empty one
            # that names another program means the PID was reused.
            alive = proc.status() != psutil.STATUS_ZOMBIE and (not cmdline or self.binary_marker in cmdline)
        except psutil.Error:
            alive = False
        return alive

    def crashed(self) -> bool:
        """Started and not stopped on purpose, yet not running: killed, or it died."""
        return self.pid_path.exists() and self.pid() is None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI that started it
                env={**os.environ, **(env or {})},
                cwd=self.state_dir,
            )
        self.pid_path.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout_s: float = 10.0) -> bool:
        pid = self.pid()
        self.pid_path.unlink(missing_ok=True)  # first: a stop on purpose is never taken for a crash
        if pid is None:
            return False
        self.end(pid, timeout_s)
        return True

    def end(self, pid: int, timeout_s: float = 10.0) -> None:
        """Terminate `pid`, then kill it after `timeout_s`; only if it still runs our program."""
        if not self.runs_as_ours(pid):
            return
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            # Not our child once the CLI that started it has exited: its zombie may linger until
            # init reaps it, so "exited" means gone or a zombie.
            deadline = time.monotonic() + timeout_s
            while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                if time.monotonic() > deadline:
                    proc.kill()
                    break
                time.sleep(0.02)
        except psutil.NoSuchProcess:
            pass

    def rss_mb(self) -> float | None:
        pid = self.pid()
        if pid is None:
            return None
        try:
            return float(psutil.Process(pid).memory_info().rss) / 1e6
        except psutil.Error:
            return None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(text[-lines:])
