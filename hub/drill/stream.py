"""A stream of messages in flight: one device login publishing QoS 1 at a steady rate, every PUBACK counted,
and afterwards what became of each message (rows, dead letters, the hub's duplicate count).

Each message's key is its index `i`; its event time is `base + i` ms, so a row's time names its message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.drill.reconcile import Tally, recovery_seconds, tally
from hub.drill.stack import FEED_TABLE, PARTNER, DrillStack

TOPIC = f"partners/{PARTNER}/air/readings"
DEVICES = 20
DUPLICATES_SQL = """SELECT coalesce(sum(records), 0) FROM hub.land_outcomes
                    WHERE partner_id = $1 AND feed = 'air' AND outcome = 'duplicate'"""


def connect(stack: DrillStack, login: tuple[str, str], client_id: str | None = None) -> mqtt.Client:
    """A paho MQTT v5 client with a device login, reconnecting on its own after the broker comes back."""
    username, password = login
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or username, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(1000)
    client.reconnect_delay_set(1, 2)
    return client


@dataclass
class Stream:
    stack: DrillStack
    prefix: str
    rate: float
    base: int = field(default_factory=lambda: int(time.time() * 1000) - 600_000)
    sent_at: dict[int, float] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._mids: dict[int, int] = {}
        self._early: dict[int, bool] = {}  # mid -> refused, for PUBACKs that beat publish()
        self._stop = threading.Event()
        self.lost: list[int] = []  # acknowledged keys neither landed nor dead-lettered (after reconcile)
        self._thread: threading.Thread | None = None
        self.refused_connects = 0  # CONNACKs that refused the device (the broker's restart gate): it tries again
        self.client = connect(self.stack, self.stack.logins[PARTNER])
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused_connects += 1

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            i = self._mids.pop(mid, None)
            if i is None:  # the PUBACK came before publish() returned its mid
                self._early[mid] = bool(reason.is_failure)
            else:
                (self.refused if reason.is_failure else self.acked).add(i)

    def payload(self, i: int) -> bytes:
        doc = {"id": f"{self.prefix}-{i % DEVICES:02d}", "t": self.base + i, "pm2_5": 10.0 + i % 7, "rh": 50.0}
        return orjson.dumps(doc)

    def start(self) -> None:
        address = self.stack.ep.mqtt()
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"drill-{self.prefix}")
        self._thread.start()

    def _run(self) -> None:
        start, i = time.monotonic(), 0
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate) + 1
            while i < due:
                # Not under self._lock: paho calls on_publish holding its own lock, which publish() takes.
                self.sent_at[i] = time.time()
                info = self.client.publish(TOPIC, self.payload(i), qos=1)
                with self._lock:
                    if info.mid in self._early:
                        (self.refused if self._early.pop(info.mid) else self.acked).add(i)
                    else:
                        self._mids[info.mid] = i
                i += 1
            time.sleep(0.01)

    def stop(self, ack_timeout_s: float) -> None:
        """Stop publishing and wait for the PUBACKs of what was published (at most `ack_timeout_s`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + ack_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._mids:
                    break
            time.sleep(0.1)
        self.client.disconnect()
        self.client.loop_stop()

    # --- what became of it -----------------------------------------------------------------

    async def landed(self) -> dict[int, float]:
        """Key -> when its row was stored (the landing transaction's start, epoch seconds)."""
        rows = await self.stack.fetch(
            f"""SELECT (extract(epoch FROM time) * 1000)::bigint AS t, extract(epoch FROM ingested_at) AS at
                FROM {FEED_TABLE} WHERE device_id LIKE $1""",
            f"{self.prefix}-%",
        )
        return {int(r["t"]) - self.base: float(r["at"]) for r in rows}

    async def dead(self, since: float) -> set[int]:
        rows = await self.stack.fetch(
            "SELECT payload FROM hub.dead_letters WHERE partner_id = $1 AND stored_at >= to_timestamp($2)",
            PARTNER,
            since - 1,
        )
        keys = set()
        for r in rows:
            try:
                doc = orjson.loads(r["payload"])
                if str(doc.get("id", "")).startswith(f"{self.prefix}-"):
                    keys.add(int(doc["t"]) - self.base)
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
                continue
        return keys

    async def settle(self, quiet_s: float, timeout_s: float) -> None:
        """Wait until every acknowledged message is a row or a dead letter, or nothing changes for `quiet_s`."""
        deadline, last, changed = time.monotonic() + timeout_s, -1, time.monotonic()
        while time.monotonic() < deadline:
            n = await self.stack.fetchval(
                f"SELECT count(*) FROM {FEED_TABLE} WHERE device_id LIKE $1", f"{self.prefix}-%"
            )
            if n >= len(self.acked):
                return
            if n != last:
                last, changed = n, time.monotonic()
            elif time.monotonic() - changed > quiet_s:
                return
            await asyncio.sleep(0.5)

    async def reconcile(
        self, since: float, duplicates_before: int, fault_at: float, fault_end: float
    ) -> tuple[Tally, float | None]:
        landed = await self.landed()
        dead = await self.dead(since)
        duplicates = int(await self.stack.fetchval(DUPLICATES_SQL, PARTNER)) - duplicates_before
        t = tally(self.sent_at, self.acked, landed, dead, duplicates)
        self.lost = sorted(self.acked - landed.keys() - dead)
        return t, recovery_seconds(self.sent_at, landed, fault_at, fault_end)
