"""Is each server answering? Real protocol round trips, not just open ports."""

from __future__ import annotations

import asyncio
import threading

import asyncpg
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaClient
from paho.mqtt.enums import CallbackAPIVersion

from hub.settings import MqttAddress


async def postgres_mode(database_url: str, timeout_s: float = 5.0) -> str:
    """'timescaledb <version>' or 'plain PostgreSQL <version>'; raises if unreachable."""
    conn = await asyncpg.connect(database_url, timeout=timeout_s)
    try:
        version = await conn.fetchval("SHOW server_version")
        ts = await conn.fetchval(
            "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
            " (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'))"
        )
        audited = "pgaudit" in (await conn.fetchval("SHOW shared_preload_libraries") or "")
    finally:
        await conn.close()
    mode = f"TimescaleDB {ts} on PostgreSQL {version}" if ts else f"plain PostgreSQL {version} (no TimescaleDB)"
    return mode + ("; reads audited (pgaudit)" if audited else "; read auditing off (no pgaudit)")


def mqtt_check(address: MqttAddress, client_id: str = "", timeout_s: float = 5.0) -> str:
    """Connect and authenticate (as a login bound to `client_id`); returns the CONNACK reason or raises."""
    done = threading.Event()
    result: dict[str, str] = {}

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        result["reason"] = str(reason)
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if address.username:
        client.username_pw_set(address.username, address.password)
    client.on_connect = on_connect
    client.connect(address.host, address.port, keepalive=10)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            raise TimeoutError("no CONNACK")
        if result["reason"] != "Success":
            raise ConnectionError(result["reason"])
        return "accepts authenticated MQTT v5 connections"
    finally:
        client.disconnect()
        client.loop_stop()


async def kafka_check(bootstrap: str, timeout_s: float = 5.0) -> str:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        topics = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
        return f"{len(topics.topics())} topics"
    finally:
        await client.close()
