"""paho-mqtt tuned for the hub's one high-rate job: receiving QoS 1 PUBLISH packets and acking them in batches.

Profiled on this machine (py-spy, `hub bench`), paho's network thread took half of an ingest
worker, most of it around each message rather than in it: a `select()` and three or four
`recv()` calls per packet, an `MQTTMessage` (with its own `threading.Condition`), a debug-log
call, a topic-filter match, and per PUBACK a socketpair write plus a `send()`.

`SubscriberClient` keeps paho for everything else (connect, persistent session, keepalive,
subscribe, reconnect, TLS) and changes three things:

- socket reads go through a 64 KiB buffer (`hub.mqtt_socket.BufferedSocket`), whose `pending()` tells paho's
  select loop that data is waiting, as an SSL socket's does;
- complete QoS 1 PUBLISH packets at the head of that buffer are parsed in one loop and handed to
  `on_publishes` as a list of (topic, payload, packet id, DUP flag); any other packet (CONNACK, SUBACK,
  PINGRESP, QoS 0/2, MQTT v5 properties, a packet split across reads) takes paho's own path;
- `ack_many` queues a batch's PUBACKs as one write.

It relies on paho 2.x internals (`_packet_read`, `_in_packet`, `_packet_queue`, `_sock`); when
they are missing, `TUNED` is False and the hub uses paho's public API instead (slower, same
behaviour). tests/unit/test_subscriber_client.py pins the parser; the ingest integration tests
run every message through it against a real Mosquitto.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from hub.mqtt_socket import READ_INTERNALS, BufferedSocket, RunReadingClient

log = logging.getLogger("hub.ingest.mqtt")

PUBACK_HEAD = 0x4002 << 16  # PUBACK, remaining length 2; the packet id fills the low 16 bits

Publish = tuple[str, bytes, int, bool]  # (topic, payload, packet id, DUP flag: delivered again)

TUNED = all(hasattr(mqtt.Client, name) for name in (*READ_INTERNALS, "_packet_queue"))


def parse_publishes(buf: bytes, pos: int, v5: bool, out: list[Publish]) -> int:
    """Append the complete QoS 1 PUBLISH packets found at `buf[pos:]`; returns the position after the last one.

    Stops (leaving the rest to paho) at any other packet type or QoS, an incomplete packet, MQTT v5
    properties, a topic that is not UTF-8, or anything malformed, which paho then reports.
    """
    end = len(buf)
    while pos + 2 <= end:
        if buf[pos] & 0xF6 != 0x32:  # type PUBLISH (3), QoS 1; DUP and RETAIN may be set
            break
        i = pos + 1
        length = 0
        shift = 0
        while True:
            if i >= end or shift > 21:
                return pos  # incomplete here, or a length longer than MQTT allows: paho's path
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        packet_end = i + length
        if packet_end > end or length < 4:
            break
        topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
        body = topic_end + 2
        if v5:
            if body >= packet_end or buf[body] != 0:
                break
            body += 1
        if body > packet_end:
            break
        try:
            topic = buf[i + 2 : topic_end].decode()
        except UnicodeDecodeError:
            break
        out.append((topic, buf[body:packet_end], (buf[topic_end] << 8) | buf[topic_end + 1], bool(buf[pos] & 0x08)))
        pos = packet_end
    return pos


class SubscriberClient(RunReadingClient):
    """A paho `Client` whose QoS 1 deliveries go to `on_publishes` in batches (see the module docstring).

    `on_publishes` runs on paho's network thread; paho's `on_message` still gets the messages
    that take paho's own path.
    """

    read_log = log

    def __init__(self, *args: Any, on_publishes: Callable[[list[Publish]], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_publishes = on_publishes
        self._v5 = kwargs.get("protocol") == MQTTProtocolVersion.MQTTv5

    def _read_run(self, sock: BufferedSocket) -> bool:
        batch: list[Publish] = []
        sock.pos = parse_publishes(sock.buf, sock.pos, self._v5, batch)
        if batch:
            self.on_publishes(batch)
        return bool(batch)

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK these QoS 1 packet ids in one write (the order of the list is kept)."""
        if not mids:
            return
        data = struct.pack(f">{len(mids)}I", *[PUBACK_HEAD | mid for mid in mids])
        self._packet_queue(mqtt.PUBACK, data, 0, 0)
