"""Ingest over TLS: `mqtts://` and `HUB_MQTT_TLS_CA`, as against a production broker.

A second Mosquitto, with a TLS listener and a certificate from a CA made for this module,
starts from a copy of the session stack's accounts (the dynamic security plugin's file), so the
hub's admin login and the partners' logins work on it as they do on the plain one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.errors import ServerUnavailable
from hub.settings import HubSettings, MqttAddress
from hub.stack.process import free_port, wait_for_port
from hub.stack.servers import current_user, dynsec_file, dynsec_plugin, mosquitto_process
from tests.integration.support import Device, eventually, feed_runtime, read_topic, running_ingest, unique

AIR = ("uni_air_lab", "air_quality")


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1: (ca, certificate, key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key, cert, key, csr = (d / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr"))
    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=hub test CA")
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "1", "-extfile", str(d / "san.cnf"))  # fmt: skip
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_settings(applied: HubSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubSettings]:
    """The session stack's settings, with MQTT over TLS to a broker of this module's own."""
    d = tmp_path_factory.mktemp("mqtt-tls")
    ca, cert, key = make_certificates(d)
    accounts = d / "dynsec.json"
    shutil.copyfile(dynsec_file(mosquitto_process(applied.state_dir.resolve()).state_dir), accounts)
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"user {current_user()}\nper_listener_settings false\nlistener {port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\nallow_anonymous false\n"
        f"plugin {dynsec_plugin()}\nplugin_opt_config_file {accounts}\n"
        "log_dest topic\nmax_queued_messages 0\nmax_inflight_messages 20000\n"
    )
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 10)
        ep = applied.endpoints()
        admin = ep.mqtt()
        url = MqttAddress("127.0.0.1", port, admin.username, admin.password, tls=True).url()
        yield applied.replace(
            database_url=ep.database_url,
            mqtt_url=url,
            kafka_bootstrap=ep.kafka_bootstrap,
            mqtt_tls_ca=ca,
            ingest_ack="kafka",  # ingest runs alone here: acknowledged once Kafka has the records
        )
    finally:
        broker.terminate()
        broker.wait(10)


async def test_messages_published_over_tls_reach_kafka_every_one(tls_settings: HubSettings) -> None:
    assert tls_settings.endpoints().mqtt_url.startswith("mqtts://")
    feed = await feed_runtime(tls_settings, *AIR)
    device = unique("tls")
    n = 600  # several TLS records and socket reads' worth
    async with running_ingest(tls_settings, index=5) as worker:
        dev = Device(tls_settings, AIR[0])
        try:
            assert dev.connect_reason == "Success"
            start_ms = int(time.time() * 1000) - 3_600_000
            for i in range(n):
                body = {"t": start_ms + i * 1000, "pm2_5": float(i), "pm10": 1.0, "temp_f": 68.0, "rh": 40.0}
                dev.publish(f"partners/{AIR[0]}/stations/{device}/air", json.dumps(body))
            acks = await dev.wait_acks(n, timeout_s=30)
            assert len(acks) == n and set(acks.values()) == {"Success"}
            # The broker acknowledged the device; the worker acknowledges the broker once Kafka has the records.
            assert await eventually(lambda: worker.source.acked >= n, timeout_s=30)
            key = device.encode()
            found = await read_topic(tls_settings, feed.row.kafka_topic, match=lambda r: r.key == key, n=n)
        finally:
            dev.close()
    assert len(found) == n


async def test_a_broker_certificate_the_configured_ca_did_not_sign_stops_ingest_with_a_clear_error(
    tls_settings: HubSettings, tmp_path: Path
) -> None:
    other_ca, _cert, _key = make_certificates(tmp_path)
    settings = tls_settings.replace(mqtt_tls_ca=other_ca)
    with pytest.raises(ServerUnavailable, match=r"MQTT broker.*certificate verify failed"):
        async with running_ingest(settings, index=6):
            pass
