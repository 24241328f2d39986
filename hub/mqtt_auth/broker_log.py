"""Who took over a session, read from Mosquitto's own log lines (`log_dest topic`: `$SYS/broker/log/<level>`).

Mosquitto 2.0.11 closes the old connection of a client id that connects again without telling
it why (no DISCONNECT; from 2.0.15 MQTT v5 clients get reason 142), so only the broker knows who
took the session. It logs, in this order:

    $SYS/broker/log/N  <ts>: New connection from 127.0.0.1:55219 on port 1883.
    $SYS/broker/log/E  <ts>: Client hub-ingest-h-0 already connected, closing old connection.
    $SYS/broker/log/N  <ts>: New client connected from 127.0.0.1:55219 as hub-ingest-h-0 (p2, c0, k30, u'x').

Pure: `TakeoverParser.feed(topic, payload)` returns a `Takeover` once both lines of one takeover arrived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAKEN = re.compile(r"^\d+: Client (?P<cid>.+) already connected, closing old connection\.$")
_CONNECTED = re.compile(
    r"^\d+: New client connected from (?P<addr>.+):(?P<port>\d+) as (?P<cid>.+) "
    r"\(p(?P<proto>\d+), c(?P<clean>\d), k(?P<keepalive>\d+)(?:, u'(?P<user>.*)')?\)\.$"
)
# The log shows Mosquitto's own protocol numbers: p1 = 3.1, p2 = 3.1.1, p5 = 5.
_PROTOCOLS = {"1": "MQTT 3.1", "2": "MQTT 3.1.1", "5": "MQTT v5"}


@dataclass(frozen=True)
class Takeover:
    client_id: str
    address: str
    port: int
    username: str | None
    protocol: str
    clean_start: bool
    keepalive: int

    def describe(self) -> str:
        return (
            f"from {self.address}:{self.port} as user {self.username!r} ({self.protocol}, "
            f"clean start {'on' if self.clean_start else 'off'}, keepalive {self.keepalive} s)"
        )


class TakeoverParser:
    def __init__(self, client_ids: set[str] | None = None) -> None:
        self.client_ids = client_ids  # only these (None: every client id)
        self._taken: set[str] = set()

    def feed(self, topic: str, payload: bytes) -> Takeover | None:
        del topic  # the level of each line differs between versions: the text alone decides
        line = payload.decode("utf-8", "replace").strip()
        m = _TAKEN.match(line)
        if m:
            if self.client_ids is None or m["cid"] in self.client_ids:
                self._taken.add(m["cid"])
            return None
        m = _CONNECTED.match(line)
        if not m or m["cid"] not in self._taken:
            return None
        self._taken.discard(m["cid"])
        return Takeover(
            client_id=m["cid"],
            address=m["addr"],
            port=int(m["port"]),
            username=m["user"],
            protocol=_PROTOCOLS.get(m["proto"], f"protocol {m['proto']}"),
            clean_start=m["clean"] == "1",
            keepalive=int(m["keepalive"]),
        )
