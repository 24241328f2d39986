"""Landing's error reports to partners: a `duplicate_key` record, on the partner's MQTT error topic.

Landing is the first to see a second, different reading for a `(device_id, time)` already landed,
so it tells the partner as ingest tells it about a message it refused (hub/error_reports.py: the
same topic, format and rate limit). Reports are best effort and sent after the commit: the dead
letter and `hub stats` keep every refusal; the MQTT connection is opened on the first report, so
landing needs no MQTT broker to land. Like every connection to the broker it has a login of its own,
bound to its client id and allowed only to publish error reports (role `hub-reports`), made through
the hub's admin login on the first report and removed when landing stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.dead_letters import MQTT_TOPIC, RECEIVED_MS
from hub.error_reports import ErrorReports, report_payload, report_topic
from hub.errors import HubError
from hub.landing.rows import Rejected
from hub.mqtt_auth.accounts import ROLE_REPORTS, generate_secret
from hub.mqtt_auth.dynsec import DynsecBroker, provision_login
from hub.settings import HubSettings, MqttAddress

log = logging.getLogger("hub.land")


def _header(r: Rejected, name: str) -> bytes | None:
    return next((bytes(v) for k, v in r.headers if k == name), None)


class PartnerReports:
    """Publishes reports with a login of its own, made through the admin login `admin`; `close` removes it."""

    def __init__(self, settings: HubSettings, admin: MqttAddress) -> None:
        self.settings = settings
        self.admin = admin
        self.username = f"hub-land-reports-{os.getpid()}-{secrets.token_hex(3)}"
        self.limit = ErrorReports()
        self.sent = 0
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()

    def _connect(self) -> mqtt.Client | None:
        if self._client is not None:
            return self._client if self._connected.is_set() else None
        password = generate_secret()
        try:  # in this worker thread, with a loop of its own (the landing loop is not waiting for it)
            asyncio.run(provision_login(self._broker(), self.username, ROLE_REPORTS, password))
        except HubError as exc:
            log.warning("cannot make the MQTT login for error reports: %s", exc)
            return None
        a = self.admin.with_credentials(self.username, password)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.username, protocol=MQTTProtocolVersion.MQTTv311
        )
        client.username_pw_set(a.username, a.password)
        if a.tls:
            client.tls_set(ca_certs=str(self.settings.mqtt_tls_ca) if self.settings.mqtt_tls_ca else None)
        client.on_connect = lambda *_args: self._connected.set()
        client.reconnect_delay_set(1, 30)
        self._client = client
        try:
            client.connect_async(a.host, a.port, self.settings.mqtt_keepalive_s)
            client.loop_start()
        except OSError as exc:
            log.warning("cannot connect to the MQTT broker for error reports: %r", exc)
            return None
        return client if self._connected.wait(5) else None

    def report(self, partner: str, feed: str, rejected: list[Rejected]) -> None:
        """One report per record, within the partner's rate; records beyond it are only dead-lettered."""
        for r in rejected:
            if partner.startswith("_") or not self.limit.allow(partner):
                continue
            client = self._connect()
            if client is None:
                log.warning("no MQTT connection for error reports: %s/%s not reported", partner, feed)
                return
            topic = (_header(r, MQTT_TOPIC) or b"").decode(errors="replace")
            received = _header(r, RECEIVED_MS) or b""
            payload = report_payload(topic, feed, r.reason, r.message, int(received) if received.isdigit() else None)
            client.publish(report_topic(self.settings.mqtt_error_root, partner, feed), payload)
            self.sent += 1

    def _broker(self) -> DynsecBroker:
        return DynsecBroker(self.admin, str(self.settings.mqtt_tls_ca) if self.settings.mqtt_tls_ca else None)

    def close(self) -> None:
        if self._client is None:
            return
        self._client.disconnect()
        self._client.loop_stop()
        try:
            asyncio.run(self._broker().run([{"command": "deleteClient", "username": self.username}]))
        except HubError as exc:  # only untidy: a login nobody knows the password of
            log.warning("could not remove the MQTT login %s: %s", self.username, exc)
