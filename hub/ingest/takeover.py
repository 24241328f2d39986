"""Telling a takeover of a worker's session from a network drop, and saying who did it.

Mosquitto 2.0.11 just closes the old connection when another connects with the same client id;
only its log says who connected (hub/mqtt_auth/broker_log.py). `TakeoverWatch` is a second, idle
connection of the worker's own (its own login, allowed to read `$SYS/broker/log/#` only), on
paho's thread: nothing of it runs on the ingest hot path. With every login bound to its client
id, a takeover can only come from a copy of the same login: a second worker with the same
identity, or a leaked password.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.mqtt_auth.accounts import BROKER_LOG_TOPICS
from hub.mqtt_auth.broker_log import Takeover, TakeoverParser
from hub.settings import MqttAddress

log = logging.getLogger("hub.ingest")


class TakeoverWatch:
    def __init__(self, address: MqttAddress, watched: set[str], tls_ca: str | None = None) -> None:
        self.parser = TakeoverParser(watched)
        self.takeovers: list[Takeover] = []
        self._subscribed = threading.Event()
        assert address.username, "the watch connects with a login of its own"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=address.username, protocol=MQTTProtocolVersion.MQTTv311
        )
        self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, *_a: c.subscribe([(t, 0) for t in BROKER_LOG_TOPICS])
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 30)
        self.address = address

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.warning("the broker refuses this worker its log (%s): session takeovers are not reported", reasons[0])
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        taken = self.parser.feed(msg.topic, bytes(msg.payload))
        if taken is not None:
            self.takeovers.append(taken)
            log.error(
                "session taken over: another client connected with the MQTT client id %s %s; "
                "this worker's connection was closed by the broker",
                taken.client_id,
                taken.describe(),
            )

    def start(self, timeout_s: float = 10.0) -> bool:
        """Connect and subscribe; False (and a warning) if the broker's log cannot be read: ingest goes on."""
        try:
            self.client.connect(self.address.host, self.address.port, 60)
        except (OSError, ssl.SSLError) as exc:
            log.warning("cannot watch the broker's log for session takeovers: %s", exc)
            return False
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            log.warning("cannot watch the broker's log for session takeovers: no SUBACK in %.0f s", timeout_s)
            return False
        return True

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
