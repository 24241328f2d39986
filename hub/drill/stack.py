"""The drill's private stack: the local stack's servers in a temp directory, the drill's config applied,
device logins, and one `hub run` supervisor whose workers the drill can find and kill."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from hub.control import mqtt_logins
from hub.control.apply import ApplyResult, apply
from hub.errors import HubError
from hub.stack import servers
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.local import LocalStack, cli_env, private_settings
from hub.stack.process import ManagedProcess

CONFIG = Path(__file__).resolve().parent / "config"
PARTNER, OTHER, CONSUMER = "drill_lab", "drill_other", "drill_city"
FEED_TABLE = f"{PARTNER}.air"
SERVER_PROCESSES: dict[str, Callable[[Path], ManagedProcess]] = {
    "mosquitto": servers.mosquitto_process,
    "kafka": servers.kafka_process,
    "postgres": servers.postgres_process,
}


class DrillStack:
    def __init__(self, log: Callable[[str], None], keep: bool = False) -> None:
        self.log = log
        self.keep = keep
        self.settings = private_settings("hub-drill-")
        self.state = self.settings.state_dir
        self.env = {**cli_env(self.settings), "HUB_INGEST_ACK": "landed"}
        self.workers: subprocess.Popen[bytes] | None = None
        self.applied: ApplyResult | None = None
        self.logins: dict[str, tuple[str, str]] = {}  # partner -> (user name, password) of a device login

    # --- set-up ------------------------------------------------------------------------

    def __enter__(self) -> DrillStack:
        self.log(f"starting a private stack in {self.state}")
        self.stack = LocalStack(self.settings)
        try:
            self.stack.up()
            self.ep = self.settings.endpoints()
            self.applied = asyncio.run(
                apply(
                    self.settings,
                    [CONFIG / "drill.yaml", CONFIG / "other.yaml", CONFIG / "sharing"],
                    CONFIG,
                    broker=LocalBrokerAuth(self.settings),
                )
            )
            for partner in (PARTNER, OTHER):
                made = asyncio.run(mqtt_logins.add_devices(self.settings, partner, ["drill-pub"]))
                self.logins[partner] = next(iter(made.items()))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_workers()
        if hasattr(self, "stack"):
            self.stack.down()
        if not self.keep:
            shutil.rmtree(self.state, ignore_errors=True)

    # --- workers -----------------------------------------------------------------------

    def start_workers(self) -> None:
        """One ingest, one landing and one share worker under one `hub run` supervisor, acknowledging after landing."""
        log = (self.state / "workers.log").open("ab")
        argv = [
            sys.executable,
            "-m",
            "hub",
            "run",
            "--ingest-workers",
            "1",
            "--land-workers",
            "1",
            "--share-workers",
            "1",
        ]
        self.workers = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)

    def stop_workers(self) -> None:
        if self.workers is None:
            return
        self.workers.send_signal(signal.SIGTERM)
        try:
            self.workers.wait(60)
        except subprocess.TimeoutExpired:
            self.workers.kill()
            self.workers.wait()
        self.workers = None

    def worker_pid(self, kind: str) -> int | None:
        """The PID of the running worker of `kind` (ingest, land, share) under the drill's supervisor."""
        if self.workers is None:
            return None
        try:
            children = psutil.Process(self.workers.pid).children()
        except psutil.Error:
            return None
        for child in children:
            try:
                argv = child.cmdline()
            except psutil.Error:
                continue
            if "hub.worker_process" in argv and kind in argv:
                return int(child.pid)
        return None

    def server_pids(self, name: str) -> list[int]:
        """The server's main process and its children (PostgreSQL's backends), main process first."""
        pid = SERVER_PROCESSES[name](self.state).pid()
        if pid is None:
            return []
        try:
            return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return [pid]

    def wait_server(self, name: str, timeout_s: float = 60) -> float:
        """Wait until the supervisor has the server running again; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if SERVER_PROCESSES[name](self.state).pid() is not None:
                return time.monotonic() - start
            time.sleep(0.1)
        raise HubError(f"{name} was not restarted within {timeout_s:.0f} s; see {self.state}/supervisor")

    # --- database ----------------------------------------------------------------------

    async def connect(self, timeout_s: float = 60) -> asyncpg.Connection:
        """A superuser connection, waiting for the database to be back if it is restarting."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return await asyncpg.connect(self.ep.database_url, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.connect()
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def fetchval(self, query: str, *args: Any) -> Any:
        conn = await self.connect()
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def wait_ingest_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = await self.fetchval(
                "SELECT count(*) FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active'"
            )
            if n >= 1:
                return
            await asyncio.sleep(0.2)
        raise HubError(f"the ingest worker did not start; see {self.state}/workers.log")
