"""Partner isolation on the real broker (issue 21, findings 1 and 2; issue 19's apply across database and broker).

Each attack is run as a partner would with its own login: joining the hub's shared group, reading
another partner's namespace or error reports, taking over the ingest worker's or another partner's
client id. Before, Mosquitto granted such a SUBSCRIBE and then dropped the victims' messages routed to
the attacker (100 of 200 lost), and let any login take any client id (502 of 1,000 lost); now the
SUBSCRIBE is refused with reason 135 (0x80 for MQTT 3.1.1), the CONNECT is refused, and every
acknowledged message of the victim is a row or a dead letter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.control import apply as applier
from hub.control import mqtt_logins
from hub.control.apply import apply
from hub.errors import ServerUnavailable
from hub.mqtt_auth.accounts import partner_role_name
from hub.mqtt_auth.dynsec import DynsecBroker
from hub.settings import HubSettings
from tests.integration.support import (
    Device,
    credentials,
    eventually,
    own_group,
    read_keys,
    running_ingest,
    running_land,
    unique,
    until_rows,
)
from tests.integration.test_onboarding import cli_env, run_hub, workspace

pytestmark = pytest.mark.timeout(180)

AIR, TRANSPORT, VOLT = "uni_air_lab", "city_transport", "voltcharge"
V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


class Client:
    """An MQTT connection as an attacker makes it: any login, any client id, clean or persistent."""

    def __init__(
        self,
        settings: HubSettings,
        username: str,
        password: str,
        client_id: str,
        *,
        protocol: MQTTProtocolVersion = V5,
        clean: bool = True,
        subscribe: list[str] | None = None,
    ) -> None:
        self.connack: str | None = None
        self.suback: list[Any] = []
        self.messages: list[str] = []
        self._done = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=clean if protocol == V311 else None,
        )
        self.client.username_pw_set(username, password)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.connack = str(reason)
            if reason.is_failure or not subscribe:
                self._done.set()
            else:
                c.subscribe([(t, 1) for t in subscribe])

        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
            self.suback = reasons
            self._done.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.append(m.topic)
        address = settings.endpoints().mqtt()
        props = None
        if protocol == V5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0 if clean else 3600
        start = clean if protocol == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect(address.host, address.port, 30, clean_start=start, properties=props)
        self.client.loop_start()
        assert self._done.wait(10), "no CONNACK/SUBACK"

    @property
    def refused(self) -> list[int]:
        return [r.value for r in self.suback if r.is_failure]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def hijack_filters(victim: str) -> list[str]:
    return [
        f"$share/hub-ingest/partners/{victim}/#",  # the hub's own group, the victim's namespace
        "$share/hub-ingest/partners/+/#",  # the hub's own group and filter shape
        f"partners/{victim}/#",  # the victim's namespace directly
        f"hub/errors/{victim}/#",  # the victim's error reports
        f"$share/x/hub/errors/{VOLT}/#",  # even its own reports through a shared group
    ]


async def count_rows(settings: HubSettings, devices: list[str]) -> int:
    return await until_rows(settings, f"{AIR}.air_quality", devices, len(devices), timeout_s=60)


def air(device: str, valid: bool = True) -> tuple[str, bytes]:
    body: dict[str, Any] = {"t": int(time.time() * 1000), "pm2_5": 12.5, "pm10": 20.0, "temp_f": 50.0, "rh": 40.0}
    if not valid:
        body["pm2_5"] = "high"
    return f"partners/{AIR}/stations/{device}/air", orjson.dumps(body)


async def publish(dev: Device, items: list[tuple[str, bytes]]) -> None:
    before = len(dev.acks)
    for topic, payload in items:
        dev.publish(topic, payload)
    acks = await dev.wait_acks(before + len(items), timeout_s=30)
    assert list(acks.values())[before:] == ["Success"] * len(items), "the broker acknowledged every message"


# --------------------------------------------------------------------------- finding 1: shared-subscription hijack


async def test_a_partner_is_refused_the_hubs_shared_group_and_every_acknowledged_message_is_a_row_or_dead_letter(
    applied: HubSettings,
) -> None:
    volt = credentials(applied, VOLT)
    live_v5 = Client(applied, volt["username"], volt["password"], VOLT, subscribe=hijack_filters(AIR))
    live_v5.close()
    # MQTT 3.1.1 has no reason codes: the refusal is 0x80 in the SUBACK.
    live_311 = Client(applied, volt["username"], volt["password"], VOLT, protocol=V311, subscribe=hijack_filters(AIR))
    live_311.close()
    assert live_v5.refused == [135] * 5, [str(r) for r in live_v5.suback]
    assert live_311.refused == [0x80] * 5
    # What was left behind: a persistent session (clean start off, expiry 3600 s) that asked for the hub's group.
    left = Client(applied, volt["username"], volt["password"], VOLT, clean=False, subscribe=hijack_filters(AIR)[:1])
    left.close()
    assert left.refused == [135]

    valid = [unique("hijack") for _ in range(180)]
    invalid = [unique("hijack-bad") for _ in range(20)]
    dev = Device(applied, AIR)
    try:
        async with running_ingest(applied), running_land(own_group(applied)):
            await publish(dev, [air(d) for d in valid] + [air(d, valid=False) for d in invalid])
            rows = await count_rows(applied, valid)
            dead = await read_keys(
                applied.endpoints().kafka_bootstrap,
                applied.kafka_dead_letter_topic,
                {air(d)[0].encode() for d in invalid},
            )
        back = Client(applied, volt["username"], volt["password"], VOLT, clean=False)
        await asyncio.sleep(0.5)
        back.close()
    finally:
        dev.close()
    acknowledged = len([a for a in dev.acks.values() if a == "Success"])
    assert acknowledged == 200
    assert rows + len(dead) == acknowledged, f"{rows} rows + {len(dead)} dead letters of {acknowledged}"
    assert back.messages == [], "the attacker's session holds no subscription and got nothing"


# --------------------------------------------------------------------------- finding 2: client-id takeover


async def test_a_partner_cannot_connect_with_the_workers_or_another_partners_client_id(applied: HubSettings) -> None:
    volt, air_own = credentials(applied, VOLT), credentials(applied, AIR)
    devices = [unique("takeover") for _ in range(100)]
    victim = Client(applied, air_own["username"], air_own["password"], AIR, subscribe=[f"hub/errors/{AIR}/#"])
    dev = Device(applied, AIR)
    try:
        async with running_ingest(applied) as worker:
            stream = asyncio.create_task(publish(dev, [air(d) for d in devices]))
            tries = [
                Client(applied, volt["username"], volt["password"], worker.client_id, protocol=V311, clean=False),
                Client(applied, volt["username"], volt["password"], worker.client_id),
                Client(applied, volt["username"], volt["password"], AIR, protocol=V311, clean=False),
            ]
            for t in tries:
                t.close()
            await stream
            found = await read_keys(applied.endpoints().kafka_bootstrap, f"hub.{AIR}.air_quality",
                                    {d.encode() for d in devices})  # fmt: skip
            assert worker.source.generation == 1, "the worker was never disconnected"
        assert victim.client.is_connected(), "the partner's own subscriber was never disconnected"
    finally:
        victim.close()
        dev.close()
    assert [t.connack for t in tries] == ["Not authorized"] * 3
    assert len(found) == len(devices)


async def test_the_worker_logs_a_takeover_of_its_session_as_an_error_with_the_peers_details(
    applied: HubSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """With every login bound, only the worker's own login can take its session (a copy of the worker)."""
    caplog.set_level(logging.WARNING, logger="hub.ingest")
    async with running_ingest(applied) as worker:
        own = worker.source.address
        assert own.username and own.password
        copy = Client(applied, own.username, own.password, worker.client_id, protocol=V311, clean=False)
        copy.close()
        assert copy.connack == "Success"
        assert worker.watch is not None
        assert await eventually(lambda: worker.watch.takeovers if worker.watch else False, timeout_s=10)
        assert await eventually(lambda: worker.source.generation >= 2, timeout_s=15), "the worker took it back"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "session taken over" in m and worker.client_id in m and "127.0.0.1:" in m and f"user '{own.username}'" in m
        and "MQTT 3.1.1" in m and "clean start off" in m
        for m in errors
    ), errors  # fmt: skip


# --------------------------------------------------------------------------- apply and the broker (issue 19)


@pytest.fixture
def lab(stack_settings: HubSettings, tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], dict[str, Any]]]:
    """A partner of this test's own, applied with `hub apply --save-credentials`."""
    ws = workspace(tmp_path)
    env = cli_env(stack_settings)
    out = ws.hub("apply", env, "--save-credentials", str(tmp_path / "creds"))
    assert out.returncode == 0, out.stderr
    yield ws, env, json.loads((tmp_path / "creds" / f"{ws.partner}.json").read_text())


async def test_a_second_apply_repairs_a_broker_that_lost_a_partners_login_and_role(
    stack_settings: HubSettings, lab: tuple[Any, dict[str, str], dict[str, Any]]
) -> None:
    ws, env, creds = lab
    p, role = ws.partner, partner_role_name(ws.partner)
    await DynsecBroker.from_settings(stack_settings).run(
        [
            {"command": "deleteClient", "username": p},
            {"command": "removeGroupRole", "groupname": role, "rolename": role},
            {"command": "deleteRole", "rolename": role},
        ]
    )
    plan = ws.hub("plan", env)
    assert plan.returncode == 0, plan.stderr
    missing = f"+ mqtt-login  {p}  (bound to client id {p}; missing"
    for line in (f"+ mqtt-role   {role}", f"~ mqtt-group  {role}", missing):
        assert line in plan.stdout, plan.stdout
    again = await applier.plan(stack_settings, ws.config, ws.schemas)
    assert "\n".join(again.render()) in plan.stdout, "plan changed nothing"

    repaired = await apply(stack_settings, ws.config, ws.schemas)
    assert set(repaired.credentials) == {p} and repaired.credentials[p] != creds["password"]
    assert (await applier.plan(stack_settings, ws.config, ws.schemas)).empty
    ok = Client(stack_settings, p, repaired.credentials[p], p, subscribe=[f"hub/errors/{p}/#"])
    ok.close()
    assert (ok.connack, ok.refused) == ("Success", [])


async def test_an_apply_the_broker_fails_half_way_commits_nothing_and_the_next_one_shows_the_password(
    stack_settings: HubSettings, tmp_path: Path
) -> None:
    class DiesHalfWay(DynsecBroker):
        """The real broker, whose connection is lost after the first of apply's commands."""

        async def run(self, commands: Any, ok_errors: Any = ()) -> list[dict[str, Any]]:
            done = await super().run(list(commands)[:1], ok_errors)
            raise ServerUnavailable("MQTT broker", "test", f"connection lost after {len(done)} command")

    ws = workspace(tmp_path)
    real = DynsecBroker.from_settings(stack_settings)
    with pytest.raises(ServerUnavailable):
        await apply(stack_settings, ws.config, ws.schemas, broker=DiesHalfWay(real.address))
    conn = await asyncpg.connect(stack_settings.endpoints().database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM hub.partners WHERE id = $1", ws.partner) == 0
    finally:
        await conn.close()
    assert partner_role_name(ws.partner) in (await real.accounts()).roles, "the broker kept its half"

    result = await apply(stack_settings, ws.config, ws.schemas, broker=real)
    assert set(result.credentials) == {ws.partner}, "the partner is new again, and its password shown"
    ok = Client(stack_settings, ws.partner, result.credentials[ws.partner], ws.partner)
    ok.close()
    assert ok.connack == "Success"


async def test_rotated_and_removed_logins_stop_working_at_once(
    stack_settings: HubSettings, lab: tuple[Any, dict[str, str], dict[str, Any]]
) -> None:
    ws, env, creds = lab
    p = ws.partner
    passwords = await mqtt_logins.add_devices(stack_settings, p, ["gauge-1", "gauge-2"])
    gauge = Client(stack_settings, f"{p}.gauge-1", passwords[f"{p}.gauge-1"], f"{p}.gauge-1")
    assert gauge.connack == "Success"
    other_id = Client(stack_settings, f"{p}.gauge-2", passwords[f"{p}.gauge-2"], f"{p}.gauge-1")
    other_id.close()
    assert other_id.connack == "Not authorized", "a login connects only with its own client id"

    rotated = run_hub(["partners", "rotate-credentials", p], env)
    assert rotated.returncode == 0, rotated.stderr
    assert await eventually(lambda: not gauge.client.is_connected(), timeout_s=5), "closed at once"
    gauge.close()
    shown = {line.split()[-1] for line in rotated.stdout.splitlines() if line.strip().startswith("password ")}
    assert len(shown) == 3 and not shown & {creds["password"], *passwords.values()}
    for username, password in [(p, creds["password"]), *passwords.items()]:
        old = Client(stack_settings, username, password, username)
        old.close()
        assert old.connack == "Not authorized", username

    await mqtt_logins.remove_devices(stack_settings, p, ["gauge-2"])
    assert f"{p}.gauge-2" not in (await DynsecBroker.from_settings(stack_settings).accounts()).clients
    assert [x.username for x in await mqtt_logins.list_logins(stack_settings, p)] == [p, f"{p}.gauge-1"]
    assert (await applier.plan(stack_settings, ws.config, ws.schemas)).empty
