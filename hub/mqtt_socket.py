"""A connected MQTT socket read through one large buffer, and the paho client that reads runs of packets from it.

paho reads a packet with a `recv()` for its first byte, more for its length, one for the rest, and
a `select()` before each packet. Behind a `BufferedSocket` those reads are served from one
`recv()` of up to 64 KiB, and `pending()` tells paho's select loop that data is waiting, as an SSL
socket's does. A `RunReadingClient` parses whole runs of packets at the head of the buffer itself
and hands each run on in one call: ingest's subscriber (hub/ingest/subscriber_client.py) runs of
QoS 1 PUBLISHes, the share worker's publisher (hub/share/mqtt_publisher.py) runs of PUBACKs. Any
other packet, or one split across reads, takes paho's own path.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

# The paho 2.x internals a RunReadingClient relies on.
READ_INTERNALS = ("_packet_read", "_loop_rc_handle", "_create_socket", "_call_socket_register_write")

READ_SIZE = 65536
GATE_WAIT_S = 0.05  # how long one turn of paho's loop waits for room before it writes and comes back


class BufferedSocket:
    """A connected socket whose reads are served from one large `recv()` at a time."""

    __slots__ = ("buf", "pos", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buf = b""
        self.pos = 0

    def recv(self, bufsize: int) -> bytes:
        buf, pos = self.buf, self.pos
        if pos >= len(buf):
            data: bytes = self.sock.recv(max(bufsize, READ_SIZE))
            if len(data) <= bufsize:
                return data
            self.buf, buf, pos = data, data, 0
        chunk = buf[pos : pos + bufsize]
        self.pos = pos + len(chunk)
        return chunk

    def fill(self) -> int:
        """Read what the socket has into the (empty) buffer; 0 means the peer closed the connection."""
        self.buf = self.sock.recv(READ_SIZE)
        self.pos = 0
        return len(self.buf)

    def buffered(self) -> int:
        return len(self.buf) - self.pos

    def pending(self) -> int:
        inner = getattr(self.sock, "pending", None)
        return len(self.buf) - self.pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class RunReadingClient(mqtt.Client):
    """A paho `Client` reading through a `BufferedSocket`, whose subclass parses runs of packets (`_read_run`).

    With `buffered` False (paho lacks the internals it relies on) it is paho's own client.
    """

    buffered = True
    read_log = logging.getLogger("hub.mqtt")
    # Set while the reader of what this client hands on has room; cleared, reads pause (see `loop_read`).
    read_gate: threading.Event | None = None

    def _read_run(self, sock: BufferedSocket) -> bool:
        """Parse the run of packets this client takes at `sock.pos`, move `sock.pos` past it and hand it on;
        False if the buffer does not start with one."""
        raise NotImplementedError

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return (
            BufferedSocket(sock) if self.buffered and isinstance(sock, socket.socket) else sock
        )  # SSLSocket is one too

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if not self.buffered:
            return super().loop_read(max_packets)
        gate = self.read_gate
        if gate is not None and not gate.wait(GATE_WAIT_S):
            # Full: leave the bytes in the socket, so the broker keeps what follows (TCP flow control) instead of
            # this process, whatever in-flight window the broker applies. paho's loop still writes (PUBACKs and
            # pings) meanwhile. We are called because the socket is readable: the broker is there, so paho's
            # keepalive must not take the unread PINGRESP for silence and drop the connection.
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        # paho reads one packet per select(); keep going while the buffer holds data, within a bound
        # so that PUBACKs and keepalive still get their turn.
        for _ in range(1000):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN or self._sock is None or not self._sock.pending():  # type: ignore[attr-defined]
                break
            if gate is not None and not gate.is_set():
                # Closed by what was just handed on: a packet split across reads refills the buffer through
                # paho's path, so reading on would take another READ_SIZE past the bound; those bytes wait here.
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_read(self) -> MQTTErrorCode:
        sock = self._sock
        if type(sock) is BufferedSocket and self._in_packet["command"] == 0:
            if sock.pos >= len(sock.buf):
                try:
                    if not sock.fill():
                        return MQTTErrorCode.MQTT_ERR_CONN_LOST
                except (BlockingIOError, ssl.SSLWantReadError):
                    return MQTTErrorCode.MQTT_ERR_AGAIN
                except ssl.SSLWantWriteError:
                    self._call_socket_register_write()
                    return MQTTErrorCode.MQTT_ERR_AGAIN
                except OSError as err:
                    self.read_log.warning("MQTT connection lost while reading: %s", err)
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST
            if self._read_run(sock):
                with self._msgtime_mutex:
                    self._last_bytes_received = time.monotonic()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()
