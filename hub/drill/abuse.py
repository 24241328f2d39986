"""Abuse while a stream is in flight: a partner's MQTT login tries what isolation forbids, and a consumer
organisation's database role tries every read the agreements do not give it. Every attempt must be
refused, and the stream beside it must lose nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.agreement.names import org_role, org_schema
from hub.drill.faults import Pace, stream_scenario
from hub.drill.reconcile import Result, judge_refusals
from hub.drill.stack import CONSUMER, OTHER, PARTNER, DrillStack

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311
REFUSED = "42501"  # insufficient_privilege: "permission denied ..."


@dataclass(frozen=True)
class MqttTry:
    what: str
    username: str
    password: str
    client_id: str
    protocol: MQTTProtocolVersion = V5
    subscribe: str | None = None
    publish: str | None = None


def attempt(stack: DrillStack, t: MqttTry) -> bool:
    """Make the attempt as an attacker would; True when the broker refused it (CONNACK, SUBACK or PUBACK)."""
    done, refused = threading.Event(), [False]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=t.client_id, protocol=t.protocol)
    client.username_pw_set(t.username, t.password)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused[0] = True
            done.set()
        elif t.subscribe:
            c.subscribe(t.subscribe, qos=1)
        elif t.publish:
            c.publish(t.publish, b'{"id": "intruder", "t": 0, "pm2_5": 1.0}', qos=1)
        else:
            done.set()

    def on_ack(_c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        codes = reasons if isinstance(reasons, list) else [reasons]
        refused[0] = bool(codes) and all(r.is_failure for r in codes)
        done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_ack
    client.on_publish = on_ack
    address = stack.ep.mqtt()
    try:
        client.connect(address.host, address.port, 30)
    except OSError:
        return False  # the broker was not there: nothing was refused
    client.loop_start()
    try:
        answered = done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return answered and refused[0]


async def ingest_client_id(stack: DrillStack) -> str:
    names = await stack.fetch("SELECT name FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active'")
    return str(names[0]["name"]) if names else "hub-ingest-0"


def mqtt_tries(stack: DrillStack) -> list[MqttTry]:
    (user, password), (other_user, other_password) = stack.logins[PARTNER], stack.logins[OTHER]
    worker = asyncio.run(ingest_client_id(stack))
    tries = [
        MqttTry(
            "publish into another partner's namespace", user, password, user, publish=f"partners/{OTHER}/air/readings"
        ),
        MqttTry("publish to another partner's error topic", user, password, user, publish=f"hub/errors/{OTHER}/air"),
    ]
    for protocol in (V5, V311):
        for flt in (f"$share/hub-ingest/partners/{PARTNER}/#", "$share/hub-ingest/partners/+/#",
                    f"partners/{OTHER}/#", f"hub/errors/{OTHER}/#"):  # fmt: skip
            tries.append(MqttTry(f"subscribe {flt} (MQTT {'5' if protocol == V5 else '3.1.1'})", user, password, user,
                                 protocol=protocol, subscribe=flt))  # fmt: skip
    tries += [
        MqttTry("connect with the ingest worker's client id", user, password, worker),
        MqttTry("connect with another partner's client id", user, password, other_user),
        MqttTry("connect with a wrong password", user, password[::-1], user),
        MqttTry("connect as another partner with one's own password", other_user, password, other_user),
        MqttTry("connect with another partner's password under one's own name", user, other_password, user),
    ]
    return tries


def mqtt_abuse(stack: DrillStack) -> Callable[[Result], tuple[float, float]]:
    def fault(result: Result) -> tuple[float, float]:
        began = time.time()
        for t in mqtt_tries(stack):
            result.attempts += 1
            if attempt(stack, t):
                result.refused += 1
            else:
                result.notes.append(f"not refused: {t.what}")
        landed = asyncio.run(stack.fetchval(f"SELECT count(*) FROM {OTHER}.air WHERE device_id = 'intruder'"))
        if landed:
            result.fail(f"{landed} messages published into {OTHER}'s namespace landed there")
        return began, time.time()

    return fault


# --------------------------------------------------------------------------- a consumer's database role

FORBIDDEN_RELATIONS_SQL = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1, 'open_data')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1
"""
RESTRICTED_CATALOGS = ["pg_catalog.pg_authid", "pg_catalog.pg_statistic", "pg_catalog.pg_user_mapping"]


def forbidden_statements(relations: list[str], superuser: str) -> list[str]:
    """Every read the consumer must not have: each relation outside its schema, plus the ways around views."""
    reads = [f"SELECT 1 FROM {rel} LIMIT 0" for rel in [*relations, *RESTRICTED_CATALOGS]]
    return [
        *reads,
        "CREATE TEMP TABLE drill_probe (i int)",
        "CREATE TABLE public.drill_probe (i int)",
        f"CREATE TABLE {org_schema(CONSUMER)}.drill_probe (i int)",
        f'SET ROLE "{superuser}"',
        f"SET ROLE {org_role(OTHER)}",
        "SELECT pg_read_file('/etc/hostname')",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT lo_import('/etc/hostname')",
    ]


async def consumer_reads(stack: DrillStack, result: Result) -> None:
    assert stack.applied is not None
    password = stack.applied.db_passwords.get(CONSUMER)
    if password is None:
        result.fail(f"hub apply gave {CONSUMER} no database password")
        return
    url = urlsplit(stack.ep.database_url)
    relations = [r[0] for r in await stack.fetch(FORBIDDEN_RELATIONS_SQL, org_schema(CONSUMER))]
    conn = await asyncpg.connect(host=url.hostname, port=url.port, database=url.path.lstrip("/"),
                                 user=org_role(CONSUMER), password=password)  # fmt: skip
    try:
        # The control: its own view answers, so the refusals below are of the reads, not of the login.
        await conn.fetchval(f"SELECT count(*) FROM {org_schema(CONSUMER)}.{PARTNER}__air")
        for sql in forbidden_statements(relations, url.username or "postgres"):
            result.attempts += 1
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == REFUSED:
                    result.refused += 1
                    continue
                result.notes.append(f"{sql}: {type(exc).__name__} (not a refusal)")
            else:
                result.notes.append(f"allowed: {sql}")
    finally:
        await conn.close()


def run_abuse(stack: DrillStack, pace: Pace, log: Callable[[str], None], _quick: bool) -> list[Result]:
    log("MQTT abuse by a partner's login")
    mqtt_row = stream_scenario(stack, pace, "mqtt abuse", "cross-namespace and error-topic publishes, the hub's "
                               "shared group, foreign client ids, wrong passwords", mqtt_abuse(stack),
                               recovery=False)  # fmt: skip
    judge_refusals(mqtt_row)
    log("a consumer organisation's database role trying every read it must not have")

    def reads(result: Result) -> tuple[float, float]:
        began = time.time()
        asyncio.run(consumer_reads(stack, result))
        return began, time.time()

    sql_row = stream_scenario(stack, pace, "consumer reads", f"{org_role(CONSUMER)} reads every table, view and "
                              "catalog outside its grants; temp tables, SET ROLE, files", reads,
                              recovery=False)  # fmt: skip
    judge_refusals(sql_row)
    return [mqtt_row, sql_row]
