"""How an organisation starts reading what it may read: the command lines the page shows beside `hub access`.

Pure, and without a credential anywhere: the database URL names the organisation's role and no password (psql
asks for it; `hub db-url ORG` prints it on the local stack), the MQTT line reads the password from a variable.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hub.agreement import names
from hub.mqtt_auth.accounts import consumer_name


@dataclass(frozen=True)
class Addresses:
    """Where the hub's servers are, without any credential (see `public_addresses`)."""

    database: str  # postgresql://host:port/dbname
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool
    kafka_bootstrap: str
    registry_url: str


def public_addresses(database_url: str, mqtt_url: str, kafka_bootstrap: str, registry_url: str) -> Addresses:
    """The servers' addresses with every user name and password taken out."""
    db = urlsplit(database_url)
    db_host = f"{db.hostname}:{db.port}" if db.port else str(db.hostname)
    mq = urlsplit(mqtt_url)
    tls = mq.scheme == "mqtts"
    reg = urlsplit(registry_url)
    reg_host = f"{reg.hostname}:{reg.port}" if reg.port else str(reg.hostname)
    return Addresses(
        database=f"{db.scheme}://{db_host}{db.path}",
        mqtt_host=mq.hostname or "127.0.0.1",
        mqtt_port=mq.port or (8883 if tls else 1883),
        mqtt_tls=tls,
        kafka_bootstrap=kafka_bootstrap.rsplit("@", 1)[-1],
        registry_url=f"{reg.scheme}://{reg_host}{reg.path}".rstrip("/"),
    )


def org_database_url(addresses: Addresses, org: str) -> str:
    parts = urlsplit(addresses.database)
    return f"{parts.scheme}://{names.org_role(org)}@{parts.netloc}{parts.path}"


def psql_line(addresses: Addresses, org: str, sql_object: str, aggregate: bool) -> str:
    order = "bucket" if aggregate else "time"
    query = f"SELECT * FROM {sql_object} ORDER BY {order} DESC LIMIT 10"
    return f"psql {shlex.quote(org_database_url(addresses, org))} -c {shlex.quote(query)}"


def mosquitto_sub_line(addresses: Addresses, org: str, topic: str) -> str:
    """The organisation's share-stream login (`consumer-<org>`, bound to that client id) reading `topic`."""
    tls = ' --cafile "$HUB_MQTT_CA"' if addresses.mqtt_tls else ""
    login = consumer_name(org)
    return (
        f"mosquitto_sub -V mqttv5 -h {shlex.quote(addresses.mqtt_host)} -p {addresses.mqtt_port}{tls} "
        f'-u {login} -i {login} -P "$HUB_MQTT_PASSWORD" -t {shlex.quote(topic)} -v'
    )


def with_start_lines(entry: dict[str, Any], org: str, addresses: Addresses) -> dict[str, Any]:
    """One entry of `hub access --json`, with a `psql` line and, per live stream (its `kafka_topic`,
    `mqtt_topic`), how to start reading it."""
    out = dict(entry)
    out["psql"] = psql_line(addresses, org, entry["object"], entry["form"] == "aggregate")
    streams = []
    if entry.get("kafka_topic"):
        topic = entry["kafka_topic"]
        command = (
            f"Kafka topic {topic} at {addresses.kafka_bootstrap}; Avro values, schema subject "
            f"{names.share_subject(topic)} at {addresses.registry_url} (HTTP Basic: {org} and an API token)"
        )
        streams.append({"protocol": "kafka", "topic": topic, "command": command})
    if entry.get("mqtt_topic"):
        topic = entry["mqtt_topic"]
        streams.append({"protocol": "mqtt", "topic": topic, "command": mosquitto_sub_line(addresses, org, topic)})
    out["streams"] = streams
    return out
