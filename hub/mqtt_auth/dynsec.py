"""Mosquitto's dynamic security API, spoken as the hub's admin login: the broker end of `BrokerAuth`.

Commands go as `{"commands": [...]}` to `$CONTROL/dynamic-security/v1`; the plugin answers every
subscriber of `.../v1/response` with one `{"responses": [...]}`, so each command carries a
`correlationData` of ours. Requests are sent with QoS 0: with QoS 1 the broker's PUBACK goes out
first and its answer then waits for the ACK of that segment (Nagle), ~45 ms a round trip against
~0.5 ms (measured on Mosquitto 2.0.11), and a QoS 0 request is never re-sent after a reconnect,
so a batch cannot run twice. The plugin rewrites its whole file after every command while the
broker serves nobody, so batches are bounded (`MAX_BATCH`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.errors import BrokerAccountsError, ServerUnavailable
from hub.mqtt_auth.accounts import CONTROL_RESPONSE_TOPIC, CONTROL_TOPIC, Accounts
from hub.mqtt_auth.reconcile import parse_accounts
from hub.settings import HubSettings, MqttAddress

MAX_BATCH = 100  # commands per message: each rewrites the plugin's file while the broker waits


class BrokerAuth(Protocol):
    """Where the hub keeps the broker's accounts: read them, and run dynsec commands against them."""

    async def accounts(self) -> Accounts: ...

    async def run(self, commands: Sequence[dict[str, Any]], ok_errors: Iterable[str] = ()) -> list[dict[str, Any]]: ...


class DynsecAdmin:
    """One admin connection (blocking; paho's network thread delivers the answers)."""

    def __init__(self, address: MqttAddress, tls_ca: str | None = None, timeout_s: float = 30.0) -> None:
        if not address.username:
            raise BrokerAccountsError(
                "HUB_MQTT_URL has no user name: it must carry the hub's admin login, "
                "e.g. mqtt://hub-admin:PASSWORD@broker:1883"
            )
        self.address = address
        self.timeout_s = timeout_s
        self._answers: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._error: str | None = None
        self._closing = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{address.username}-{secrets.token_hex(6)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    @property
    def where(self) -> str:
        return f"{self.address.host}:{self.address.port}"

    # paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            self._fail(f"the broker refused the admin login {self.address.username!r} ({reason})")
            return
        client.subscribe(CONTROL_RESPONSE_TOPIC, qos=0)

    def _on_subscribe(self, _c: object, _u: object, _mid: int, reasons: list[Any], _p: object) -> None:
        if any(r.is_failure for r in reasons):
            self._fail(f"the admin login may not read {CONTROL_RESPONSE_TOPIC} ({reasons[0]})")
        self._ready.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        with self._cond:
            for r in responses:
                if isinstance(r, dict) and isinstance(r.get("correlationData"), str):
                    self._answers[r["correlationData"]] = r
            self._cond.notify_all()

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not self._closing:
            self._fail(f"the broker closed the admin connection ({reason})")

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = self._error or message
            self._cond.notify_all()
        self._ready.set()

    # lifecycle

    def __enter__(self) -> DynsecAdmin:
        try:
            self.client.connect(self.address.host, self.address.port, keepalive=60)
        except (OSError, ssl.SSLError) as exc:
            raise ServerUnavailable("MQTT broker", self.where, str(exc)) from exc
        self.client.loop_start()
        if not self._ready.wait(self.timeout_s) or self._error:
            self.close()
            detail = self._error or "no answer to CONNECT/SUBSCRIBE"
            raise BrokerAccountsError(
                f"cannot use the dynamic security API of the MQTT broker at {self.where}: {detail}; check the "
                "admin login in HUB_MQTT_URL and that the broker loads mosquitto_dynamic_security.so"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()

    def run(self, commands: Sequence[dict[str, Any]], ok_errors: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Run the commands in order, in batches; raise if any failed with an error not in `ok_errors`."""
        ok = set(ok_errors)
        answers: list[dict[str, Any]] = []
        for start in range(0, len(commands), MAX_BATCH):
            answers += self._batch(commands[start : start + MAX_BATCH])
        failed = [(c, a) for c, a in zip(commands, answers, strict=True) if a.get("error") and a["error"] not in ok]
        if failed:
            listed = "; ".join(f"{_describe(c)}: {a['error']}" for c, a in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise BrokerAccountsError(f"the MQTT broker refused {len(failed)} account change(s): {listed}{more}")
        return answers

    def _batch(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        tag = secrets.token_hex(6)
        ids = [f"{tag}-{i}" for i in range(len(commands))]
        body = {"commands": [{**c, "correlationData": i} for c, i in zip(commands, ids, strict=True)]}
        info = self.client.publish(CONTROL_TOPIC, json.dumps(body), qos=0)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ServerUnavailable("MQTT broker", self.where, f"cannot send to the dynamic security API ({info.rc})")
        with self._cond:
            done = self._cond.wait_for(lambda: self._error or all(i in self._answers for i in ids), self.timeout_s)
            if self._error:
                raise ServerUnavailable("MQTT broker", self.where, self._error)
            if not done:
                raise BrokerAccountsError(
                    f"no answer from the dynamic security API of the MQTT broker at {self.where} within "
                    f"{self.timeout_s:.0f} s; check its state with `hub plan` before trying again"
                )
            return [self._answers.pop(i) for i in ids]

    def read_accounts(self) -> Accounts:
        default, roles, clients, groups = (
            a.get("data", {})
            for a in self.run(
                [
                    {"command": "getDefaultACLAccess"},
                    {"command": "listRoles", "verbose": True, "count": -1},
                    {"command": "listClients", "verbose": True, "count": -1},
                    {"command": "listGroups", "verbose": True, "count": -1},
                ]
            )
        )
        return parse_accounts(default, roles, clients, groups)


def _describe(command: dict[str, Any]) -> str:
    for key in ("username", "groupname", "rolename"):
        if key in command:
            return f"{command['command']}({command[key]})"
    return str(command["command"])


class DynsecBroker:
    """The broker at `address` (its user name and password: the hub's admin login), one connection per call."""

    def __init__(self, address: MqttAddress, tls_ca: str | None = None) -> None:
        self.address = address
        self.tls_ca = tls_ca

    @classmethod
    def from_settings(cls, settings: HubSettings) -> DynsecBroker:
        return cls(settings.endpoints().mqtt(), str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None)

    def _run(self, commands: Sequence[dict[str, Any]], ok_errors: Iterable[str]) -> list[dict[str, Any]]:
        with DynsecAdmin(self.address, self.tls_ca) as admin:
            return admin.run(commands, ok_errors)

    def _read(self) -> Accounts:
        with DynsecAdmin(self.address, self.tls_ca) as admin:
            return admin.read_accounts()

    async def accounts(self) -> Accounts:
        return await asyncio.to_thread(self._read)

    async def run(self, commands: Sequence[dict[str, Any]], ok_errors: Iterable[str] = ()) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._run, list(commands), tuple(ok_errors))


async def provision_login(broker: BrokerAuth, username: str, group: str | None, password: str) -> None:
    """Create one of the hub's own logins (or give it a new password), bound to the client id `username`,
    and in `group` (hub/mqtt_auth/accounts.py `hub_groups`).

    A new password disconnects whatever still used the login: a process the hub replaced, or
    someone who should not have had it.
    """
    create: dict[str, Any] = {"command": "createClient", "username": username, "clientid": username,
                              "password": password}  # fmt: skip
    commands: list[dict[str, Any]] = [
        create,
        {"command": "setClientPassword", "username": username, "password": password},
        {"command": "modifyClient", "username": username, "clientid": username},
    ]
    if group:
        create["groups"] = [{"groupname": group}]
        commands.append({"command": "addGroupClient", "groupname": group, "username": username})
    await broker.run(commands, ok_errors=("Client already exists", "Client is already in this group"))
