"""The hub's schema registry answers as Confluent's does, and the ecosystem's own client decodes the hub's records.

The API is the stack's `api` process (started by `hub stack up`), reached at the registry URL
of the test stack, with the example connectors applied, with an API token of uni_air_lab (the registry's
routes need one: tests/integration/test_api_auth.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.settings import HubSettings
from tests.integration.support import REPO, Device, api_token, running_ingest, unique

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
AIR = "hub.uni_air_lab.air_quality"
AIR_SUBJECT = f"{AIR}-value"
SUBJECTS = {
    "hub.city_transport.parking_occupancy-value",
    "hub.city_transport.traffic_counts-value",
    AIR_SUBJECT,
    "hub.uni_air_lab.noise_levels-value",
    "hub.voltcharge.charger_status-value",
}


OWN_SUBJECTS = {AIR_SUBJECT, "hub.uni_air_lab.noise_levels-value"}  # uni_air_lab's own feeds


@pytest.fixture(scope="module")
def token(applied: HubSettings) -> str:
    return api_token(applied, "uni_air_lab")


@pytest.fixture
def api(applied: HubSettings, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=applied.endpoints().registry_url, timeout=10, headers=headers) as client:
        yield client


@pytest.fixture
def registry(applied: HubSettings, token: str) -> SchemaRegistryClient:
    """Confluent's client with HTTP Basic, as a Kafka consumer configures it (`basic.auth.user.info`)."""
    return SchemaRegistryClient(
        {
            "url": applied.endpoints().registry_url,
            "basic.auth.user.info": f"uni_air_lab:{token}",
        }
    )


def air_schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "schemas" / "air_quality.avsc").read_text())
    return data


def with_field(field: dict[str, Any]) -> str:
    schema = air_schema()
    schema["fields"].append(field)
    return json.dumps(schema)


async def catalog_schema(settings: HubSettings, subject: str) -> tuple[int, str]:
    """(schema id, text) of the latest version of `subject`, read from the catalog directly."""
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        row = await conn.fetchrow(
            """SELECT s.id, s.schema FROM hub.subject_versions v JOIN hub.schemas s ON s.id = v.schema_id
               WHERE v.subject = $1 ORDER BY v.version DESC LIMIT 1""",
            subject,
        )
    finally:
        await conn.close()
    assert row is not None
    return row["id"], row["schema"]


@pytest.fixture
def air_in_catalog(applied: HubSettings) -> tuple[int, str]:
    """(schema id, text) of the air-quality feed's latest schema, from the catalog itself."""
    return asyncio.run(catalog_schema(applied, AIR_SUBJECT))


def error_of(response: httpx.Response) -> tuple[int, int]:
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["message"]
    return response.status_code, body["error_code"]


# --------------------------------------------------------------------------- reading schemas


def test_subjects_are_the_value_subjects_the_tokens_organisation_may_read(api: httpx.Client) -> None:
    response = api.get("/subjects")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPE
    assert OWN_SUBJECTS <= set(response.json())
    assert "hub.voltcharge.charger_status-value" not in response.json()  # no agreement grants it to uni_air_lab


def test_a_subjects_latest_version_is_the_catalogs_schema(api: httpx.Client, air_in_catalog: tuple[int, str]) -> None:
    schema_id, text = air_in_catalog
    assert api.get(f"/subjects/{AIR_SUBJECT}/versions").json() == [1]
    latest = api.get(f"/subjects/{AIR_SUBJECT}/versions/latest").json()
    assert latest == {"subject": AIR_SUBJECT, "version": 1, "id": schema_id, "schema": text}
    assert api.get(f"/subjects/{AIR_SUBJECT}/versions/1").json() == latest
    assert api.get(f"/subjects/{AIR_SUBJECT}/versions/-1").json() == latest
    assert json.loads(api.get(f"/subjects/{AIR_SUBJECT}/versions/1/schema").text) == air_schema()


def test_a_schema_is_found_by_its_global_id(api: httpx.Client, air_in_catalog: tuple[int, str]) -> None:
    schema_id, text = air_in_catalog
    response = api.get(f"/schemas/ids/{schema_id}")
    assert response.status_code == 200 and response.headers["content-type"] == MEDIA_TYPE
    assert response.json() == {"schema": text}
    assert api.get(f"/schemas/ids/{schema_id}/versions").json() == [{"subject": AIR_SUBJECT, "version": 1}]
    assert api.get(f"/schemas/ids/{schema_id}/subjects").json() == [AIR_SUBJECT]
    assert api.get("/schemas/types").json() == ["AVRO"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/subjects/no.such.subject-value/versions", 404, 40401),
        ("/subjects/no.such.subject-value/versions/latest", 404, 40401),
        (f"/subjects/{AIR_SUBJECT}/versions/99", 404, 40402),
        ("/schemas/ids/999999", 404, 40403),
        ("/schemas/ids/999999/versions", 404, 40403),
        ("/schemas/ids/99999999999", 404, 40403),
        (f"/subjects/{AIR_SUBJECT}/versions/0", 422, 42202),
        (f"/subjects/{AIR_SUBJECT}/versions/newest", 422, 42202),
        ("/config/no.such.subject-value", 404, 40401),
        ("/no/such/route", 404, 404),
    ],
)
def test_what_does_not_exist_is_an_error_in_confluents_shape(
    api: httpx.Client, path: str, status: int, code: int
) -> None:
    assert error_of(api.get(path)) == (status, code)


def test_compatibility_levels_are_the_feeds_modes(api: httpx.Client) -> None:
    assert api.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert api.get(f"/config/{AIR_SUBJECT}").json() == {"compatibilityLevel": "BACKWARD"}
    assert api.get("/mode").json() == {"mode": "READONLY"}


# --------------------------------------------------------------------------- lookups and compatibility


def test_a_registered_schema_is_found_under_its_subject(api: httpx.Client, air_in_catalog: tuple[int, str]) -> None:
    schema_id, _text = air_in_catalog
    as_written = (REPO / "schemas" / "air_quality.avsc").read_text()  # other whitespace, other key order
    found = api.post(f"/subjects/{AIR_SUBJECT}", json={"schema": as_written})
    assert found.status_code == 200
    assert (found.json()["id"], found.json()["version"]) == (schema_id, 1)
    unknown = api.post(f"/subjects/{AIR_SUBJECT}", json={"schema": with_field({"name": "o3", "type": "double"})})
    assert error_of(unknown) == (404, 40403)
    assert error_of(api.post(f"/subjects/{AIR_SUBJECT}", json={"schema": "{not json"})) == (422, 42201)
    assert error_of(api.post(f"/subjects/{AIR_SUBJECT}", json={"schema": '{"type": "nope"}'})) == (422, 42201)


def test_an_optional_new_field_is_compatible(api: httpx.Client) -> None:
    candidate = with_field({"name": "o3", "type": ["null", "double"], "default": None})
    for path in (
        f"/compatibility/subjects/{AIR_SUBJECT}/versions/latest",
        f"/compatibility/subjects/{AIR_SUBJECT}/versions",
    ):
        response = api.post(path, json={"schema": candidate})
        assert response.status_code == 200 and response.headers["content-type"] == MEDIA_TYPE
        assert response.json() == {"is_compatible": True, "messages": []}


def test_a_required_new_field_is_incompatible_and_the_message_names_it_and_the_rule(api: httpx.Client) -> None:
    response = api.post(
        f"/compatibility/subjects/{AIR_SUBJECT}/versions/1",
        json={"schema": with_field({"name": "o3", "type": "double"})},
    )
    body = response.json()
    assert response.status_code == 200 and body["is_compatible"] is False
    [message] = body["messages"]
    assert message.startswith("BACKWARD: field 'o3' was added without a default")


def test_an_oversized_request_is_refused_in_confluents_shape(api: httpx.Client) -> None:
    response = api.post(f"/subjects/{AIR_SUBJECT}", content=b"x" * (2 * 1024 * 1024))
    assert error_of(response) == (413, 413)


def test_compatibility_against_a_missing_version_or_subject_is_an_error(api: httpx.Client) -> None:
    body = {"schema": json.dumps(air_schema())}
    assert error_of(api.post(f"/compatibility/subjects/{AIR_SUBJECT}/versions/7", json=body)) == (404, 40402)
    assert error_of(api.post("/compatibility/subjects/nope-value/versions/latest", json=body)) == (404, 40401)
    assert error_of(api.post(f"/compatibility/subjects/{AIR_SUBJECT}/versions/latest", json={})) == (422, 42201)


# --------------------------------------------------------------------------- read-only


def test_registering_a_new_schema_over_http_is_refused_pointing_to_hub_apply(api: httpx.Client) -> None:
    candidate = with_field({"name": "o3", "type": ["null", "double"], "default": None})
    response = api.post(f"/subjects/{AIR_SUBJECT}/versions", json={"schema": candidate})
    assert error_of(response) == (405, 405)
    assert "`hub apply`" in response.json()["message"] and "connector config" in response.json()["message"]
    assert api.get(f"/subjects/{AIR_SUBJECT}/versions").json() == [1]


def test_registering_an_incompatible_schema_is_a_conflict(api: httpx.Client) -> None:
    response = api.post(f"/subjects/{AIR_SUBJECT}/versions", json={"schema": with_field({"name": "o3", "type": "int"})})
    assert error_of(response) == (409, 409)
    assert "field 'o3' was added without a default" in response.json()["message"]


def test_registering_the_registered_schema_returns_its_id(api: httpx.Client) -> None:
    latest = api.get(f"/subjects/{AIR_SUBJECT}/versions/latest").json()
    response = api.post(f"/subjects/{AIR_SUBJECT}/versions", json={"schema": latest["schema"]})
    assert response.status_code == 200 and response.json() == {"id": latest["id"]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"/subjects/{AIR_SUBJECT}"),
        ("DELETE", f"/subjects/{AIR_SUBJECT}/versions/1"),
        ("PUT", "/config"),
        ("PUT", f"/config/{AIR_SUBJECT}"),
        ("PUT", "/mode"),
    ],
)
def test_changes_over_http_are_refused(api: httpx.Client, method: str, path: str) -> None:
    response = api.request(method, path, json={"compatibility": "NONE"})
    assert error_of(response) == (405, 405)
    assert "hub apply" in response.json()["message"]
    assert api.get(f"/config/{AIR_SUBJECT}").json() == {"compatibilityLevel": "BACKWARD"}


# --------------------------------------------------------------------------- the hub's own routes


def test_feeds_is_what_hub_feeds_json_prints(api: httpx.Client, hub_env: dict[str, str]) -> None:
    cli = subprocess.run(
        [sys.executable, "-m", "hub", "feeds", "--json"], env=hub_env, capture_output=True, text=True, check=True
    )
    response = api.get("/feeds")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(cli.stdout)
    assert {f["subject"] for f in response.json()} >= SUBJECTS


def test_health_reports_the_database(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["subjects"] >= len(SUBJECTS)


# --------------------------------------------------------------------------- the ecosystem's client


def test_confluents_client_reads_the_registry(registry: SchemaRegistryClient, air_in_catalog: tuple[int, str]) -> None:
    schema_id, text = air_in_catalog
    assert OWN_SUBJECTS <= set(registry.get_subjects())
    latest = registry.get_latest_version(AIR_SUBJECT)
    assert (latest.schema_id, latest.version, latest.schema.schema_str) == (schema_id, 1, text)
    assert registry.get_schema(schema_id).schema_str == text
    assert registry.get_compatibility(AIR_SUBJECT) == "BACKWARD"
    assert registry.lookup_schema(AIR_SUBJECT, Schema(text, "AVRO")).schema_id == schema_id
    optional = with_field({"name": "o3", "type": ["null", "double"], "default": None})
    assert registry.test_compatibility(AIR_SUBJECT, Schema(optional, "AVRO")) is True
    assert registry.test_compatibility(AIR_SUBJECT, Schema(with_field({"name": "o3", "type": "int"}), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as refused:
        registry.register_schema(AIR_SUBJECT, Schema(optional, "AVRO"))
    assert refused.value.http_status_code == 405 and "hub apply" in refused.value.error_message


def test_confluents_serializer_uses_the_registered_schema_without_registering(
    registry: SchemaRegistryClient, air_in_catalog: tuple[int, str]
) -> None:
    schema_id, text = air_in_catalog
    serializer = AvroSerializer(registry, text)  # auto-registers by default: answered with the existing id
    ctx = SerializationContext(AIR, MessageField.VALUE)
    record = {
        "device_id": "sensor-1",
        "time": int(time.time() * 1000),
        "pm25": 1.5,
        "pm10": 3.0,
        "no2": None,
        "temperature_c": 20.0,
        "humidity_pct": 55.0,
        "battery_v": None,
    }
    data = serializer(record, ctx)
    assert data is not None and data[:5] == b"\x00" + schema_id.to_bytes(4, "big")
    assert AvroDeserializer(registry)(data, ctx)["pm25"] == 1.5


def first_record(bootstrap: str, topic: str, key: bytes, timeout_s: float = 20.0) -> Message:
    """The first record with `key` in `topic`, read from the beginning by a confluent-kafka consumer."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("registry-test"), "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.key() == key:
                return message
    finally:
        consumer.close()
    raise AssertionError(f"no record with key {key!r} in {topic} after {timeout_s} s")


async def test_a_confluent_consumer_with_avro_deserializer_decodes_a_message_the_hub_produced(
    applied: HubSettings, registry: SchemaRegistryClient
) -> None:
    device_id = unique("air")
    now_ms = int(time.time() * 1000)
    device = Device(applied, "uni_air_lab")
    try:
        async with running_ingest(applied.replace(ingest_ack="kafka")):
            mid = device.publish(
                f"partners/uni_air_lab/stations/{device_id}/air",
                json.dumps({"t": now_ms, "pm2_5": 8.25, "pm10": 14.0, "temp_f": 50.0, "rh": 61.0, "vbat": 3.5}),
            )
            acks = await device.wait_acks(1)
    finally:
        device.close()
    assert acks[mid] == "Success"  # the PUBACK comes only after Kafka acknowledged the record

    message = await asyncio.to_thread(first_record, applied.endpoints().kafka_bootstrap, AIR, device_id.encode())
    value = AvroDeserializer(registry)(message.value(), SerializationContext(AIR, MessageField.VALUE))

    assert value["device_id"] == device_id
    assert int(value["time"].timestamp() * 1000) == now_ms
    assert value["pm25"] == 8.25 and value["pm10"] == 14.0 and value["humidity_pct"] == 61.0
    assert abs(value["temperature_c"] - 10.0) < 1e-9  # 50 °F, converted by the connector's mapping
    assert value["battery_v"] == pytest.approx(3.5)
    assert value["no2"] is None


def test_the_api_log_is_in_the_state_directory(applied: HubSettings) -> None:
    log = Path(applied.state_dir) / "api" / "api.log"
    assert "Application startup complete" in log.read_text()
