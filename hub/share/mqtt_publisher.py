"""paho-mqtt tuned for the share worker's MQTT streams: QoS 1 PUBLISHes written a batch at a time, PUBACKs read in runs.

Measured here (20,000 publishes of a share stream's JSON to a local Mosquitto): through paho's
public `publish()` and its network thread, each message cost the publishing process about 190 us
of CPU, far more than projecting the record: per message a packet dict and an `MQTTMessageInfo`, a
socketpair write to wake the network thread, a `select()` and a `send()` there, then for its PUBACK
a `select()`, three `recv()`s and the `on_publish` callback with its locks.

`PublisherClient` keeps paho for everything else (connect, keepalive, TLS, disconnect) and:

- `publish_batch` encodes QoS 1 PUBLISH packets itself (packet ids from paho's own counter) and
  queues a whole batch as one write;
- reads go through a `BufferedSocket`; the PUBACKs at the head of its buffer are parsed in one loop
  and handed to `on_pubacks` as (packet id, reason code) pairs, and a PUBACK that paho reads itself
  (split across reads) reaches `on_pubacks` too.

Its packets are not paho's: paho neither resends them after a reconnect nor counts them in flight;
the caller (outputs.MqttOut) keeps its own window, and a lost connection fails its flush, so the
worker publishes the batch again. Without the paho internals it relies on (`TUNED` False), it
publishes through paho's public API (slower, same behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

from hub.mqtt_socket import READ_INTERNALS, BufferedSocket, RunReadingClient

log = logging.getLogger("hub.share")

Ack = tuple[int, int]  # (packet id, reason code: >= 0x80 is a refusal)
PUBACK = 0x40
PUBLISH_QOS1 = 0x32
MAX_TOPIC_BYTES = 65535

TUNED = all(
    hasattr(mqtt.Client, name) for name in (*READ_INTERNALS, "_packet_queue", "_mid_generate", "_handle_pubackcomp")
)


def remaining_length(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, mid: int, v5: bool) -> bytes:
    """A QoS 1 PUBLISH packet (MQTT v5: with an empty property list)."""
    if len(topic) > MAX_TOPIC_BYTES:
        raise ValueError(f"MQTT topic of {len(topic)} bytes: at most {MAX_TOPIC_BYTES}")
    head = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    return b"\x32" + remaining_length(len(head) + len(payload)) + head + payload


def parse_pubacks(buf: bytes, pos: int, out: list[Ack]) -> int:
    """Append the complete PUBACKs found at `buf[pos:]`; returns the position after the last one.

    Stops at any other packet, an incomplete PUBACK, or one with a long property list (paho then
    reads it, and `_handle_pubackcomp` hands it on).
    """
    end = len(buf)
    while pos + 4 <= end and buf[pos] == PUBACK:
        length = buf[pos + 1]
        packet_end = pos + 2 + length
        if length < 2 or length > 0x7F or packet_end > end:
            break
        out.append(((buf[pos + 2] << 8) | buf[pos + 3], buf[pos + 4] if length > 2 else 0))
        pos = packet_end
    return pos


class PublisherClient(RunReadingClient):
    """A paho `Client` that publishes QoS 1 batches and reports their PUBACKs (see the module docstring).

    `on_pubacks` runs on paho's network thread.
    """

    buffered = TUNED
    read_log = log

    def __init__(self, *args: Any, on_pubacks: Callable[[list[Ack]], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_pubacks = on_pubacks
        self._v5 = kwargs.get("protocol") == MQTTProtocolVersion.MQTTv5
        if not TUNED:
            self.on_publish = self._on_publish

    def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Queue `messages` (topic, payload) at QoS 1, in order; their packet ids."""
        if not TUNED:
            mids = []
            for topic, payload in messages:
                info = self.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise OSError(f"cannot publish ({mqtt.error_string(info.rc)})")
                mids.append(info.mid)
            return mids
        v5 = self._v5
        mids = [self._mid_generate() for _ in messages]
        packets = [publish_packet(t.encode(), p, mid, v5) for (t, p), mid in zip(messages, mids, strict=True)]
        data = b"".join(packets)
        if data:
            self._packet_queue(PUBLISH_QOS1, data, 0, 1)
        return mids

    def _on_publish(self, _c: object, _u: object, mid: int, reason: Any, _p: object) -> None:
        self.on_pubacks([(mid, int(getattr(reason, "value", 0)))])

    # --- reading ---------------------------------------------------------------------

    def _read_run(self, sock: BufferedSocket) -> bool:
        acks: list[Ack] = []
        sock.pos = parse_pubacks(sock.buf, sock.pos, acks)
        if acks:
            self.on_pubacks(acks)
        return bool(acks)

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        """A PUBACK paho read itself: every QoS 1 packet of this client is one of `publish_batch`'s."""
        packet = self._in_packet["packet"]
        if not TUNED or cmd != "PUBACK" or len(packet) < 2:
            return super()._handle_pubackcomp(cmd)
        self.on_pubacks([((packet[0] << 8) | packet[1], packet[2] if len(packet) > 2 else 0)])
        return MQTTErrorCode.MQTT_ERR_SUCCESS
