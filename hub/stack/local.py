"""`hub stack up | down | status | env`: the local stack as one object.

`up` is idempotent: a server already running as ours is left alone; a port taken by
anything else is an error that says which setting to change.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from hub.catalog.topics import ensure_feed_topics
from hub.errors import StackError
from hub.mqtt_auth.accounts import ADMIN_USER, HEALTH_USER, bootstrap_document, generate_secret
from hub.mqtt_auth.dynsec import DynsecAdmin, DynsecBroker, provision_login
from hub.settings import SECRETS_FILE, STACK_FILE, HubSettings, MqttAddress, write_private_json
from hub.stack import broker_gate, health, servers
from hub.stack.api_process import api_check, api_process, start_api
from hub.stack.events import histories, read_events
from hub.stack.process import ManagedProcess, port_in_use, wait_for_port
from hub.stack.supervisor_process import events_path, start_supervisor, supervisor_process
from hub.stack.workers import stop_workers

DATABASE = "hub"
# The servers of the local stack, in the order they start; the supervisor starts any that crashed again.
SERVERS = ("postgres", "kafka", "mosquitto", "api")


@dataclass
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    healthy: bool
    detail: str
    rss_mb: float | None = None
    restarts: int = 0  # by the supervisor, after a crash
    last_event: str | None = None  # the supervisor's last event for it, e.g. "2026-11-27 09:12:03 restarted: in 1.3 s"


def workers_process(state: Path) -> ManagedProcess:
    """A background `hub run` started by `hub demo`; `down` stops it before the servers."""
    return ManagedProcess("workers", state / "workers", "-m hub")  # `hub run`, then `hub.supervise` (same PID)


class LocalStack:
    def __init__(self, settings: HubSettings, log: Callable[[str], None] = lambda _msg: None) -> None:
        self.settings = settings
        self.state = settings.state_dir.resolve()
        self.log = log

    # --- state -----------------------------------------------------------------------

    def _check_state_dir(self) -> None:
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StackError(
                f"cannot create state directory {self.state}: {exc.strerror}; "
                "choose another with --state-dir or HUB_STATE_DIR"
            ) from exc
        if not os.access(self.state, os.R_OK | os.W_OK | os.X_OK):
            raise StackError(
                f"state directory {self.state} is not readable and writable by this user; "
                "fix its permissions or choose another with --state-dir or HUB_STATE_DIR"
            )
        # PostgreSQL runs as `postgres` when we are root: it must be able to reach its data dir.
        self.state.chmod(self.state.stat().st_mode | 0o711)

    def _secrets(self) -> dict[str, str]:
        secrets = self.settings.secrets()
        changed = False
        for key in ("postgres_password", "mqtt_admin_password", "mqtt_health_password"):
            if key not in secrets:
                secrets[key] = generate_secret()
                changed = True
        if changed:
            write_private_json(self.state / SECRETS_FILE, secrets)
        return secrets

    def endpoints(self, secrets: dict[str, str]) -> dict[str, str]:
        s = self.settings
        # The hub's admin login: every other login of the hub is provisioned through it.
        mqtt = MqttAddress("127.0.0.1", s.mqtt_port, ADMIN_USER, secrets["mqtt_admin_password"], False)
        return {
            "database_url": f"postgresql://postgres:{secrets['postgres_password']}@127.0.0.1:{s.pg_port}/{DATABASE}",
            "mqtt_url": mqtt.url(),
            "kafka_bootstrap": f"127.0.0.1:{s.kafka_port}",
            "registry_url": f"http://127.0.0.1:{s.api_port}",
        }

    # --- up ----------------------------------------------------------------------------

    def up(self) -> list[ComponentStatus]:
        self._check_state_dir()
        # Every binary is looked for before anything starts, so a missing one changes nothing.
        servers.require_binaries()
        endpoints = self.endpoints(self._secrets())
        # The API process runs in a directory of its own: where approved access requests go is fixed here (+17).
        agreements = str(self.settings.agreements_dir.resolve())
        state = {"endpoints": endpoints, "started_at": time.time(), "agreements_dir": agreements}
        write_private_json(self.state / STACK_FILE, state)
        for name in SERVERS:
            self.start_server(name)
        if self.settings.stack_supervise:  # it also opens a restart gate a supervisor left closed
            self._up_simple(
                "supervisor", supervisor_process(self.state), None, "", lambda: start_supervisor(self.settings)
            )
        else:
            self._open_left_gate(endpoints)
        return self.status()

    def _open_left_gate(self, endpoints: dict[str, str]) -> None:
        """Mosquitto's restart gate, left closed by a supervisor that stopped mid-gate, with none to open it now."""
        gate = broker_gate.read_gate(self.state)
        if gate is not None:
            broker_gate.open_gate(self.state, MqttAddress.parse(endpoints["mqtt_url"]), gate)
            self.log(f"mosquitto: opened the restart gate a supervisor left closed ({len(gate.logins)} logins enabled)")

    def start_server(self, name: str) -> list[str]:
        """Start one server of the stack unless it runs (`up`, and the supervisor after a crash).

        Returns the Kafka topics created again (the broker forgets them when it stops)."""
        s = self.settings
        secrets = self._secrets()
        if name == "postgres":
            self._up_postgres(secrets["postgres_password"], self.endpoints(secrets)["database_url"])
        elif name == "kafka":
            self._up_simple(
                "kafka",
                servers.kafka_process(self.state),
                s.kafka_port,
                "HUB_KAFKA_PORT",
                lambda: servers.start_kafka(self.state, s.kafka_port),
            )
            return self.recreate_topics()
        elif name == "mosquitto":
            self._up_mosquitto(secrets, MqttAddress.parse(self.endpoints(secrets)["mqtt_url"]))
        elif name == "api":
            self._up_simple(
                "api",
                api_process(self.state),
                s.api_port,
                "HUB_API_PORT",
                lambda: start_api(self.state, s.api_port, s.stack_state().get("agreements_dir")),
            )
        else:
            raise StackError(f"no server {name!r} in the local stack (its servers: {', '.join(SERVERS)})")
        return []

    def recreate_topics(self) -> list[str]:
        """The local broker keeps nothing when it stops: create the applied feeds' topics again."""
        created = asyncio.run(ensure_feed_topics(self.settings))
        if created:
            self.log(f"kafka: recreated {len(created)} topics of applied feeds")
        return created

    def process(self, name: str) -> ManagedProcess:
        return {
            "postgres": servers.postgres_process,
            "kafka": servers.kafka_process,
            "mosquitto": servers.mosquitto_process,
            "api": api_process,
            "supervisor": supervisor_process,
        }[name](self.state)

    def _claim_port(self, name: str, port: int, setting: str) -> None:
        if port_in_use(port):
            raise StackError(
                f"port {port} for {name} is in use by another program: stop it, "
                f"or choose another port with {setting}=<port>"
            )

    def _up_simple(
        self, name: str, proc: ManagedProcess, port: int | None, setting: str, start: Callable[[], ManagedProcess]
    ) -> None:
        if proc.pid() is not None:
            self.log(f"{name}: already running (pid {proc.pid()})")
            return
        if port is None:  # no port: the supervisor
            self.log(f"{name}: started (pid {start().pid()})")
            return
        self._claim_port(name, port, setting)
        started = start()
        wait_for_port(port, 15.0, started)
        self.log(f"{name}: started on 127.0.0.1:{port} (pid {started.pid()})")

    def _up_postgres(self, password: str, url: str) -> None:
        proc = servers.postgres_process(self.state)
        if proc.pid() is None:
            self._claim_port("postgres", self.settings.pg_port, "HUB_PG_PORT")
            servers.init_postgres(self.state, password)
            servers.start_postgres(self.state, self.settings.pg_port)
            self.log(f"postgres: started on 127.0.0.1:{self.settings.pg_port} (pid {proc.pid()})")
        else:
            self.log(f"postgres: already running (pid {proc.pid()})")
        asyncio.run(_ensure_database(url))

    def _up_mosquitto(self, secrets: dict[str, str], admin: MqttAddress) -> None:
        s = self.settings
        proc = servers.mosquitto_process(self.state)
        self._bootstrap_accounts(secrets)
        changed = servers.write_mosquitto_conf(self.state, s.mqtt_port, s.ingest_max_in_flight)
        if changed and proc.pid() is not None:
            self.log("mosquitto: its configuration changed; restarting it (sessions and queues are persistent)")
            proc.stop()
        self._up_simple(
            "mosquitto",
            proc,
            s.mqtt_port,
            "HUB_MQTT_PORT",
            lambda: servers.start_mosquitto(self.state, s.mqtt_port, s.ingest_max_in_flight),
        )
        # A plugin that cannot read its file leaves the broker running with no accounts at all.
        try:
            with DynsecAdmin(admin, timeout_s=10) as check:
                check.read_accounts()
        except Exception as exc:
            raise StackError(
                f"mosquitto runs but its accounts do not work ({exc}); see {proc.log_path}. If its accounts "
                f"file {servers.dynsec_file(proc.state_dir)} belongs to another state, stop the stack, remove "
                "that file and run `hub stack up` again, then `hub apply` (partners get new passwords)"
            ) from exc
        asyncio.run(provision_login(DynsecBroker(admin), HEALTH_USER, None, secrets["mqtt_health_password"]))

    def _bootstrap_accounts(self, secrets: dict[str, str]) -> None:
        """The plugin's first file: written once, before the broker first starts; the broker owns it after."""
        path = servers.dynsec_file(servers.mosquitto_process(self.state).state_dir)
        if path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        doc = bootstrap_document(self.settings, secrets["mqtt_admin_password"], secrets["mqtt_health_password"])
        write_private_json(path, doc)

    def health_address(self, secrets: dict[str, str]) -> MqttAddress:
        password = secrets.get("mqtt_health_password", "")  # absent in a state from before the accounts API
        return MqttAddress("127.0.0.1", self.settings.mqtt_port, HEALTH_USER, password, False)

    # --- down --------------------------------------------------------------------------

    def down(self) -> list[str]:
        stopped = []
        # The supervisor first (it would start again what is stopped next), then the workers (they end
        # their broker sessions cleanly), then the servers they use.
        if supervisor_process(self.state).stop(timeout_s=30):
            stopped.append("supervisor")
        stopped += stop_workers(self.state)  # every `hub run` of this state, the user's own too
        workers_process(self.state).stop(timeout_s=60)
        if api_process(self.state).stop():
            stopped.append("api")
        if servers.mosquitto_process(self.state).stop():
            stopped.append("mosquitto")
        if servers.kafka_process(self.state).stop():
            stopped.append("kafka")
        if servers.stop_postgres(self.state):
            stopped.append("postgres")
        return stopped

    # --- status ------------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        secrets = self.settings.secrets()
        if not secrets:
            return [
                ComponentStatus(n, "-", None, False, "not set up: run `hub stack up`")
                for n in ("postgres", "kafka", "mosquitto", "api")
            ]
        ep = self.endpoints(secrets)
        s = self.settings
        out = []
        pg = servers.postgres_process(self.state)
        out.append(
            self._probe(
                "postgres", f"127.0.0.1:{s.pg_port}", pg, lambda: asyncio.run(health.postgres_mode(ep["database_url"]))
            )
        )
        kafka = servers.kafka_process(self.state)
        out.append(
            self._probe(
                "kafka",
                ep["kafka_bootstrap"],
                kafka,
                lambda: asyncio.run(health.kafka_check(ep["kafka_bootstrap"])) + " (Tansu, memory only)",
            )
        )
        mq = servers.mosquitto_process(self.state)
        out.append(
            self._probe(
                "mosquitto",
                f"127.0.0.1:{s.mqtt_port}",
                mq,
                lambda: self._with_gate(health.mqtt_check(self.health_address(secrets), client_id=HEALTH_USER)),
            )
        )
        out.append(
            self._probe(
                "api", f"127.0.0.1:{s.api_port}", api_process(self.state), lambda: api_check(ep["registry_url"])
            )
        )
        if s.stack_supervise:
            out.append(self._supervisor_status())
        return self._with_history(out)

    def _with_gate(self, detail: str) -> str:
        gate = broker_gate.read_gate(self.state)
        return detail if gate is None else f"{detail}; {broker_gate.describe(gate)}"

    def _supervisor_status(self) -> ComponentStatus:
        proc = supervisor_process(self.state)
        pid = proc.pid()
        if pid is None:
            return ComponentStatus("supervisor", "-", None, False, "not running: a crashed server stays down")
        detail = f"restarts a crashed {', '.join(SERVERS)}; events in {events_path(self.state)}"
        return ComponentStatus("supervisor", "-", pid, True, detail, proc.rss_mb())

    def _with_history(self, statuses: list[ComponentStatus]) -> list[ComponentStatus]:
        found = histories(read_events(events_path(self.state)))
        for status in statuses:
            history = found.get(status.name)
            if history is not None:
                status.restarts = history.restarts
                status.last_event = history.last.describe() if history.last else None
        return statuses

    def _probe(self, name: str, address: str, proc: ManagedProcess, check: Callable[[], str]) -> ComponentStatus:
        pid = proc.pid()
        if pid is None:
            crashed = proc.crashed() and self.settings.stack_supervise
            return ComponentStatus(
                name, address, None, False, "crashed: the supervisor is starting it again" if crashed else "stopped"
            )
        try:
            detail = check()
            healthy = True
        except Exception as exc:
            detail, healthy = f"not answering: {exc}", False
        return ComponentStatus(name, address, pid, healthy, detail, proc.rss_mb())

    # --- env ---------------------------------------------------------------------------

    def env_lines(self) -> list[str]:
        secrets = self.settings.secrets()
        if not secrets:
            raise StackError(f"no stack in {self.state}: run `hub stack up` first")
        ep = self.endpoints(secrets)
        return [
            f"export HUB_STATE_DIR={_shell_quote(str(self.state))}",
            f"export HUB_DATABASE_URL={_shell_quote(ep['database_url'])}",
            f"export HUB_MQTT_URL={_shell_quote(ep['mqtt_url'])}",
            f"export HUB_KAFKA_BOOTSTRAP={_shell_quote(ep['kafka_bootstrap'])}",
            f"export HUB_REGISTRY_URL={_shell_quote(ep['registry_url'])}",
        ]


async def _ensure_database(url: str) -> None:
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def stack_summary(statuses: list[ComponentStatus]) -> dict[str, Any]:
    return {
        s.name: {
            "address": s.address,
            "pid": s.pid,
            "healthy": s.healthy,
            "detail": s.detail,
            "rss_mb": s.rss_mb,
            "restarts": s.restarts,
            "last_event": s.last_event,
        }
        for s in statuses
    }


def private_settings(prefix: str = "hub-") -> HubSettings:
    """Settings for a throwaway stack (tests, `hub bench`): a fresh state directory, free loopback ports.

    Server URLs are cleared so that nothing in the environment points this stack elsewhere.
    """
    import tempfile

    from hub.stack.process import free_port

    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o711)  # PostgreSQL runs as `postgres` when we are root: it must enter it
    return HubSettings(
        state_dir=state,
        mqtt_port=free_port(),
        pg_port=free_port(),
        kafka_port=free_port(),
        api_port=free_port(),
        database_url=None,
        mqtt_url=None,
        kafka_bootstrap=None,
        registry_url=None,
    )


def cli_env(settings: HubSettings) -> dict[str, str]:
    """The environment under which a `hub` subprocess talks to this stack (and to nothing else)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_STATE_DIR=str(settings.state_dir),
        HUB_MQTT_PORT=str(settings.mqtt_port),
        HUB_PG_PORT=str(settings.pg_port),
        HUB_KAFKA_PORT=str(settings.kafka_port),
        HUB_API_PORT=str(settings.api_port),
    )
    return env
