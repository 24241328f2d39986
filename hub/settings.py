"""Settings: one model for the local stack and for external servers.

Every setting has a safe default for the local stack and can be overridden by an
environment variable (`HUB_<NAME>`). Server URLs left unset are read from the
local stack's state directory, so `hub` commands work right after `hub stack up`.

A plain dataclass read by `hub.settings_fields`, not a pydantic model: every worker process reads its
settings, and pydantic would cost each of them about 12 MB of resident memory (issue 18).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

from hub.errors import StackError
from hub.settings_fields import FieldRule, rules_of, setting

STACK_FILE = "stack.json"
SECRETS_FILE = "secrets.json"


@dataclass(init=False, frozen=True)
class HubSettings:
    """`HubSettings()` reads every `HUB_<NAME>` of the environment; keyword arguments come before it.

    A value that is not what its setting takes is a `ConfigError` naming the variable (or keyword).
    """

    _rules: ClassVar[tuple[FieldRule, ...]]

    state_dir: Path = setting(Path(".hub"), "Where the local stack keeps its state.")

    # Servers. Unset means: the local stack started by `hub stack up`.
    database_url: str | None = setting(None, secret=True)  # URLs carry the hub's passwords
    mqtt_url: str | None = setting(None, secret=True)
    kafka_bootstrap: str | None = None
    registry_url: str | None = None

    # Ports of the local stack (loopback only); chosen away from system services.
    mqtt_port: int = 18830
    pg_port: int = 15432
    kafka_port: int = 19092
    api_port: int = 18081

    # MQTT
    mqtt_tls_ca: Path | None = None
    mqtt_keepalive_s: int = 30
    mqtt_namespace_root: str = "partners"
    mqtt_error_root: str = "hub/errors"
    # HUB_MQTT_URL's user name and password are the hub's admin login on the broker (Mosquitto's dynamic
    # security API); every other login of the hub is provisioned through it, bound to its own client id.
    # The host part of the ingest workers' client ids (default: this machine's host name).
    worker_host: str | None = None

    # Kafka
    kafka_partitions: int = 4
    kafka_replication_factor: int = 1
    kafka_retention_ms: int = 7 * 24 * 3600 * 1000
    kafka_topic_prefix: str = "hub."
    kafka_dead_letter_topic: str = "hub.dead-letter"
    kafka_linger_ms: int = 5
    kafka_max_batch_bytes: int = 256 * 1024
    kafka_idempotent: bool = False
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = setting(None, secret=True)
    # (+22) Kafka logins for share-stream consumers (hub/control/kafka_access.py): `auto` makes a SASL/SCRAM user
    # and prefix ACLs per consumer where the hub reaches Kafka over SASL (never on the local broker); `off` leaves
    # Kafka access to the operator.
    kafka_consumer_logins: Literal["auto", "off"] = "auto"
    # The Kafka address consumers are told to use with their login (default: the hub's own, HUB_KAFKA_BOOTSTRAP).
    kafka_public_bootstrap: str | None = None

    # Ingest
    ingest_batch_size: int = 500
    # A worker sends what it received at least this often (sooner once it holds `ingest_batch_size` messages). At a
    # steady pace each batch costs about 10 ms of CPU beyond its messages, here and downstream (Kafka requests,
    # landing's transactions): 100 instead of 20, with landing's fetch below, took `hub bench`'s half-rate phase from
    # 95-97% of both cores to 73-84% (docs/operations.md, "A steady pace").
    ingest_flush_ms: int = setting(default=100, ge=1, le=5_000)
    ingest_max_in_flight: int = 20_000
    ingest_max_inbox: int = setting(
        default=10_000,
        ge=1,
        description="Messages a worker holds received and not yet processed; it stops reading from the broker there.",
    )
    ingest_max_payload_bytes: int = 64 * 1024
    ingest_workers: int = 1
    ingest_ack: Literal["auto", "kafka", "landed"] = setting(
        default="auto",
        description="When ingest acknowledges (PUBACK) a message to the MQTT broker: `kafka` once Kafka acknowledged "
        "its record; `landed` once landing stored it (its offset in hub.land_offsets, committed with the row); "
        "`auto`: `landed` where the Kafka broker is the local stack's (memory only), `kafka` elsewhere.",
    )
    ingest_landed_poll_ms: int = setting(
        default=20, gt=0, description="With `landed` acknowledgement: how often a worker looks for landed offsets."
    )

    # How often running workers look for partners, feeds and schema versions applied since they started.
    catalog_reload_s: float = 5.0

    # Sharing (docs/agreements.md)
    share_database_grants: bool = setting(
        default=True,
        description="Whether `hub apply` manages database-level privileges: CONNECT only for organisations' roles, "
        "TEMP for none. Off only for an engine that cannot grant on databases (the TimescaleDB WASM test engine) "
        "or where the operator manages them.",
    )

    # Live share streams (+22, hub/share/): the share workers' group, how often they look for agreements
    # that started or ended (revocation stops a stream within about this long plus a batch), batches.
    share_group: str = "hub-share"
    share_nice: int = setting(
        default=10,
        ge=0,
        le=19,
        description="The share workers' niceness: while the CPUs are saturated they get a small part of them, and "
        "ingest, landing and the servers keep the rest; 0: the same priority as every other process.",
    )
    share_reload_s: float = setting(default=1.0, gt=0, description="How often share workers re-read agreements.")
    share_idle_check_s: float = setting(
        default=1.0,
        gt=0,
        description="How often a lane that reads nothing compares its stored positions (another worker, or a "
        "reset, may have moved them); a log found shorter than the lane's position is looked into at once.",
    )
    # How long a share lane's fetch may wait at the broker for new records (aiokafka's fetch_max_wait_ms, 500 by
    # default). The local broker does not answer a waiting fetch when records arrive but when it looks again: a
    # record waited 77-107 ms (median) with 500, 11 ms with 50.
    share_fetch_wait_ms: int = setting(default=50, ge=1, le=5_000)
    share_batch_size: int = setting(default=5_000, ge=1)
    share_flush_ms: int = setting(default=100, ge=1)
    share_window_grace_s: float = setting(
        default=2.0, ge=0, description="Aggregate streams: how long after a window closes it is emitted."
    )
    share_window_backfill: int = setting(
        default=1, ge=1, le=1000, description="Aggregate streams: closed windows a new stream starts with."
    )
    # (+22) The local broker's memory (hub/share/memory.py): a share topic there is recreated empty once its
    # consumer's groups (share.<org>.*) committed all of it and it holds this many records, or at the bound.
    share_free_min_records: int = setting(default=100_000, ge=1)
    share_local_max_records: int = setting(
        default=1_000_000, ge=1, description="The bound: a local share topic is recreated at this size, read or not."
    )
    share_free_every_s: float = setting(default=60.0, gt=0, description="How often a share worker checks.")

    # Landing
    # Records a landing worker takes per batch; it holds about two batches and a prefetch at once. 2,500 drained a
    # backlog as fast as 5,000 and kept each landing worker about 10 MB smaller (hub bench, 2026-11-27).
    land_batch_size: int = 2_500
    land_flush_ms: int = 200
    # A landing fetch waits at the broker until it has `land_fetch_min_bytes` or `land_fetch_wait_ms` passed: at a
    # steady pace a worker then writes a few large batches a second instead of twenty small ones, each a
    # transaction of about ten round trips and about 10 ms of CPU beyond its rows; a burst fills the bytes at once.
    land_fetch_wait_ms: int = setting(default=100, ge=1, le=5_000)
    land_fetch_min_bytes: int = setting(default=1024 * 1024, ge=1, le=64 * 1024 * 1024)
    land_group: str = "hub-landing"
    land_retry_max_s: float = setting(
        default=10.0, gt=0, description="Longest wait between retries of a failed write (database or Kafka down)."
    )
    land_kafka_timeout_s: float = setting(
        default=30.0, gt=0, description="How long one dead-letter send or topic check may take before it is retried."
    )
    land_check_broker_epoch: bool = setting(
        default=True,
        description="Before storing offsets, check that the broker still holds this hub's epoch marker topic, "
        "so that a broker that lost its log (the local broker on restart) is noticed and never skipped into; "
        "ingest sends in that epoch, so that what a lost log took with it is counted. Off: neither is done.",
    )

    # The local stack's supervisor (hub/stack/supervisor.py): restarts a server that crashed.
    stack_supervise: bool = setting(default=True, description="`hub stack up` starts the supervisor.")
    stack_supervise_every_s: float = setting(default=1.0, gt=0, description="How often it checks the servers.")
    stack_gate_timeout_s: float = setting(
        default=30.0,
        gt=0,
        description="After Mosquitto crashed: the longest wait for the ingest workers' SUBACKs before partners may "
        "connect again (hub/stack/broker_gate.py).",
    )

    # hub apply: one transaction. Unset: half of the database's lock table (hub/control/size.py).
    apply_max_locks: int | None = setting(default=None, gt=0, description="Most locks one apply may hold.")

    # The HTTP API (hub serve): what one client may cost it (hub/api/limits.py).
    api_max_body_bytes: int = setting(default=1024 * 1024, gt=0, description="Largest request body accepted (413).")
    api_body_timeout_s: float = setting(default=30.0, gt=0, description="Longest time to receive a request body (408).")
    api_header_timeout_s: float = setting(
        default=10.0, gt=0, description="Longest time to receive a request's line and headers (408, then closed)."
    )

    # The catalog and the web page of `hub serve` (+17): DCAT-AP 3 at /catalog.{ttl,jsonld,rdf}, the page at /.
    public_url: str | None = setting(
        default=None, description="The hub's address as people and harvesters reach it (default: each request's own)."
    )
    catalog_title: str = "Civic data-sharing hub"
    catalog_description: str = (
        "Live sensor feeds the city and its partners share: who publishes them, and on what terms."
    )
    catalog_publisher: str = setting(default="Hub operator", description="Who runs the hub and publishes the catalog.")
    catalog_publisher_type: str = setting(default="LocalAuthority", description="Its ADMS publisher type.")
    catalog_licence: str = setting(default="CC0-1.0", description="The licence of the catalog's own metadata.")
    catalog_contact: str | None = setting(default=None, description="An e-mail address for the catalog's services.")
    catalog_page_size: int = setting(default=100, ge=1, le=1000, description="Datasets per page of /catalog.*.")
    agreements_dir: Path = setting(
        default=Path("agreements"), description="Where an approved access request's agreement file is written."
    )

    # Bounding the local broker's memory: it keeps every record until its topic is deleted
    # (hub/landing/broker_memory.py). Only ever done on the local stack's broker.
    land_free_broker_memory: bool = setting(
        default=True,
        description="Delete and recreate feed topics that are fully landed, to give the local broker's memory "
        "back. Only ever done when the Kafka endpoint is the broker `hub stack up` started (it keeps records in "
        "memory only); see hub/landing/broker_memory.py.",
    )
    land_free_broker_memory_every_s: float = setting(
        default=60.0, gt=0, description="How often to look for such topics."
    )
    land_free_broker_memory_min_records: int = setting(
        default=200_000, ge=1, description="A topic is only recreated once it holds at least this many records."
    )
    land_free_broker_memory_while_ingesting: bool = setting(
        default=True,
        description="Also while ingest workers run: safe because every ingest worker holds each feed topic's shared "
        "advisory lock from before a send until the broker's acknowledgement. Turn it off when another "
        "producer writes to feed topics without that lock: topics are then only recreated while no ingest "
        "worker has an active session.",
    )

    # Dead letters kept in the database (+15): landing stores the dead-letter topic in hub.dead_letters.
    dead_letter_store: bool = setting(
        default=True, description="Landing consumes the dead-letter topic and keeps every dead letter in the database."
    )
    dead_letter_retention_days: float = setting(default=14.0, gt=0, description="How long dead letters are kept.")
    dead_letter_max_rows: int = setting(default=1_000_000, ge=1, description="At most this many are kept (oldest go).")
    dead_letter_prune_every_s: float = setting(default=300.0, gt=0, description="How often landing prunes them.")

    # Grafana (+16, docs/dashboards.md): `hub grafana build`, `sync` and `check`.
    grafana_dashboards_dir: Path | None = setting(
        default=None, description="Where `hub grafana build` writes (default <state_dir>/dashboards)."
    )
    grafana_url: str | None = setting(default=None, description="The Grafana `hub grafana sync` pushes to.")
    grafana_db_host: str | None = setting(
        default=None, description="host:port at which Grafana reaches the database (default: the hub's own)."
    )
    grafana_db_sslmode: str = "disable"
    grafana_db_user: str = setting(
        default="hub_grafana", description="The operators' datasource role (compose creates it: GRAFANA_DB_USER)."
    )
    grafana_secrets_file: Path | None = setting(
        default=None, description="Owner-only env file of Grafana's database passwords (default <state_dir>/grafana)."
    )
    grafana_prometheus_url: str | None = setting(
        default=None, description="The Prometheus Grafana reads the overview's rates from (unset: no rate panels)."
    )

    # Operations (+18): metrics, health routes, logs (docs/operations.md, "Metrics" and "Logs").
    metrics_host: str = setting(
        default="127.0.0.1",
        description="Address each worker's metrics and health server binds (0.0.0.0 in a container).",
    )
    metrics_port: int = setting(
        default=0,
        ge=0,
        le=65535,
        description="First port of the workers' metrics and health servers: a `hub run` gives its workers this "
        "port and the next ones (one worker per container: this port). 0: each takes a free port (the local "
        "stack; `hub stack status` shows where).",
    )
    log_format: Literal["plain", "json"] = setting(
        default="plain", description="Log lines as text, or one JSON object per line (`json`)."
    )
    land_commit_kafka_offsets: bool = setting(
        default=True,
        description="After each database commit landing also commits the same offsets to the Kafka group (best "
        "effort), so Kafka's tools show the group's lag; the database stays the source of truth.",
    )

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - {rule.name for rule in self._rules})
        if unknown:
            raise TypeError(f"HubSettings has no setting {', '.join(unknown)}")
        environ = os.environ
        for rule in self._rules:
            if rule.name in values:
                value = rule.check(values[rule.name])
            elif (text := environ.get(rule.env)) is not None:
                value = rule.parse(text)
            else:
                value = rule.default
            object.__setattr__(self, rule.name, value)

    def replace(self, **changes: Any) -> HubSettings:
        """A copy with `changes`, checked as keyword arguments are; the environment is not read again."""
        return HubSettings(**{**{rule.name: getattr(self, rule.name) for rule in self._rules}, **changes})

    @classmethod
    def env_names(cls) -> list[str]:
        """Every setting's variable, `HUB_<NAME>`."""
        return [rule.env for rule in cls._rules]

    def stack_state(self) -> dict[str, Any]:
        return _read_json(self.state_dir / STACK_FILE)

    def secrets(self) -> dict[str, str]:
        return _read_json(self.state_dir / SECRETS_FILE)

    def endpoints(self) -> Endpoints:
        """The servers to talk to: explicit settings first, then the local stack."""
        stack: dict[str, Any] = {}
        if not (self.database_url and self.mqtt_url and self.kafka_bootstrap):
            stack = self.stack_state().get("endpoints", {})
        missing = []
        db = self.database_url or stack.get("database_url")
        mqtt = self.mqtt_url or stack.get("mqtt_url")
        kafka = self.kafka_bootstrap or stack.get("kafka_bootstrap")
        registry = self.registry_url or stack.get("registry_url") or f"http://127.0.0.1:{self.api_port}"
        for name, value in (("HUB_DATABASE_URL", db), ("HUB_MQTT_URL", mqtt), ("HUB_KAFKA_BOOTSTRAP", kafka)):
            if not value:
                missing.append(name)
        if missing:
            raise StackError(
                f"no server address for {', '.join(missing)}: run `hub stack up` "
                f"(state dir {self.state_dir}) or set {' and '.join(missing)}"
            )
        assert db and mqtt and kafka
        return Endpoints(database_url=db, mqtt_url=mqtt, kafka_bootstrap=kafka, registry_url=registry)


HubSettings._rules = rules_of(HubSettings)


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    mqtt_url: str
    kafka_bootstrap: str
    registry_url: str

    def mqtt(self) -> MqttAddress:
        return MqttAddress.parse(self.mqtt_url)


@dataclass(frozen=True)
class MqttAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> MqttAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise StackError(f"HUB_MQTT_URL must start with mqtt:// or mqtts://, got {parts.scheme!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=parts.username,
            password=parts.password,
            tls=tls,
        )

    def with_credentials(self, username: str, password: str) -> MqttAddress:
        return MqttAddress(self.host, self.port, username, password, self.tls)

    def url(self) -> str:
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open() as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except PermissionError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}; fix its permissions or set HUB_STATE_DIR") from exc
    except json.JSONDecodeError as exc:
        raise StackError(f"{path} is corrupt ({exc}); remove it and run `hub stack up` again") from exc
    if not isinstance(data, dict):
        raise StackError(f"{path} is corrupt; remove it and run `hub stack up` again")
    return data


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file readable only by its owner (it may hold secrets), whole or not at all, and on disk
    before this returns (the restart gate's record must outlive a crash right after it)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
