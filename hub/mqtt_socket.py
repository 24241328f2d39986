"""A connected MQTT socket read through one large buffer: what the hub's tuned paho clients read from.

paho reads a packet with a `recv()` for its first byte, more for its length, one for the rest, and
a `select()` before each packet. Behind a `BufferedSocket` those reads are served from one
`recv()` of up to 64 KiB, and `pending()` tells paho's select loop that data is waiting, as an SSL
socket's does. Ingest's subscriber (hub/ingest/subscriber_client.py) and the share worker's
publisher (hub/share/mqtt_publisher.py) parse whole runs of packets at the head of `buf` themselves.
"""

from __future__ import annotations

from typing import Any

READ_SIZE = 65536


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
