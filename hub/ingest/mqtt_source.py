"""The hub's MQTT subscription: paho's network thread only appends to an inbox.

Messages are acknowledged (PUBACK) by the caller, after Kafka acknowledged them
(`manual_ack`), so a crash re-delivers instead of losing. The session is persistent:
what is published while a worker restarts waits in the broker for it. A worker that
stops cleanly ends its session, so it does not stay a member of the shared group.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hub.errors import ServerUnavailable
from hub.ingest.subscriber_client import TUNED, Publish, SubscriberClient
from hub.settings import MqttAddress

log = logging.getLogger("hub.ingest")
SESSION_TAKEN_OVER = 142  # MQTT v5 DISCONNECT reason (sent by Mosquitto 2.0.15+, not by 2.0.11)


class Message(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    received_ms: int
    generation: int  # connection generation: a mid is only valid on the connection that delivered it
    dup: bool = False  # the broker delivered it again (it had sent it before and got no PUBACK)


class MqttSource:
    def __init__(
        self,
        address: MqttAddress,
        client_id: str,
        filters: list[str],
        *,
        subscribe: bool = True,
        unsubscribe_first: list[str] | None = None,
        share_group: str | None = "hub-ingest",
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        keepalive_s: int = 30,
        tls_ca: str | None = None,
        wake: Callable[[], None] | None = None,
        wake_every: int = 500,
        on_subscribed: Callable[[], None] | None = None,
        max_inbox: int,
        max_in_flight: int,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.share_group = share_group
        self.subscriptions = [self._shared(f, share_group) for f in filters]
        self.subscribe = subscribe
        self.obsolete = [self._shared(f, share_group) for f in unsubscribe_first or [] if f not in filters]
        self.protocol = protocol
        self.keepalive_s = keepalive_s
        self.tls_ca = tls_ca
        self.inbox: deque[Message] = deque()
        # Reading from the broker pauses while the inbox holds `max_inbox` messages, or those plus `max_in_flight`
        # are delivered and not acknowledged (the inbox, the batch being sent, and in `landed` mode what waits for
        # landing), and resumes once the inbox is half empty and a quarter of those are acknowledged. The broker's
        # in-flight window did not bound either (hub bench: 75,000 messages, about 30 MB, in one worker's inbox
        # under a burst, with Mosquitto's `max_inflight_messages 20000`).
        self.max_inbox = max_inbox
        self.max_outstanding = max_inbox + max_in_flight
        self.room = threading.Event()
        self.room.set()
        self.pauses = 0  # times reading paused
        self.generation = 0
        self.last_message_at = 0.0
        self.received = 0  # messages delivered to us (redeliveries included)
        self.acked = 0  # PUBACKs sent
        self._delivered_now = 0  # on the current connection
        self._acked_now = 0
        self._wake = wake
        self._wake_every = wake_every
        self._on_subscribed = on_subscribed  # each SUBACK of our filters (on paho's thread)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        self._pending_sub: int | None = None
        self._unsubacks: set[int] = set()  # mids of UNSUBSCRIBEs the broker confirmed
        self._unsubacked = threading.Condition()
        self._stopping = False
        self.client = self._new_client(clean=False)

    @staticmethod
    def _shared(topic_filter: str, share_group: str | None) -> str:
        return f"$share/{share_group}/{topic_filter}" if share_group else topic_filter

    def _new_client(self, clean: bool) -> mqtt.Client:
        options: dict[str, Any] = dict(
            client_id=self.client_id,
            clean_session=clean if self.protocol != MQTTProtocolVersion.MQTTv5 else None,
            protocol=self.protocol,
            manual_ack=True,
        )
        client = (
            SubscriberClient(CallbackAPIVersion.VERSION2, on_publishes=self._on_publishes, **options)
            if TUNED
            else mqtt.Client(CallbackAPIVersion.VERSION2, **options)
        )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set(ca_certs=self.tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        return client

    # paho callbacks: they run on paho's network thread and do as little as possible.

    def _on_connect(self, client: mqtt.Client, _u: object, flags: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            self._connect_error = str(reason)
            self._connected.set()
            return
        self.generation += 1
        # Unacknowledged messages of an earlier connection will be delivered again: forget them.
        self.inbox.clear()
        self.room.set()
        self._delivered_now = self._acked_now = 0
        if self.obsolete:  # filters an earlier version of this session subscribed to: stop their deliveries
            client.unsubscribe(self.obsolete)
        if self.subscribe and self.subscriptions:
            _result, mid = client.subscribe([(s, 1) for s in self.subscriptions])
            self._pending_sub = mid
        else:
            self._subscribed.set()
        self._connected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, reasons: list[ReasonCode], _p: Properties | None
    ) -> None:
        if mid == self._pending_sub:
            failed = [str(r) for r in reasons if getattr(r, "is_failure", False)]
            if failed:
                self._connect_error = f"subscription refused: {failed}"
            elif self._on_subscribed is not None:
                self._on_subscribed()
            self._subscribed.set()

    def _on_unsubscribe(self, _c: mqtt.Client, _u: object, mid: int, _r: object, _p: object) -> None:
        # The UNSUBACK may arrive before `unsubscribe()` returned its mid to the calling thread.
        with self._unsubacked:
            self._unsubacks.add(mid)
            self._unsubacked.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, flags: Any, reason: Any, _p: object) -> None:
        # The next connection's CONNACK must be read whatever the inbox holds (`_on_connect` starts it afresh).
        self.room.set()
        if self._stopping:
            return
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            log.error("session taken over: the broker closed %s's connection for another with its client id",
                      self.client_id)  # fmt: skip
            return
        by = "the broker" if getattr(flags, "is_disconnect_packet_from_server", False) else "the network or the broker"
        log.warning("MQTT connection of %s closed by %s (%s); reconnecting", self.client_id, by, reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._on_publishes([(msg.topic, bytes(msg.payload), msg.mid, bool(msg.dup))])

    def _on_publishes(self, batch: list[Publish]) -> None:
        now = time.time()
        received_ms, generation = int(now * 1000), self.generation
        inbox = self.inbox
        before = len(inbox)
        inbox.extend([Message(topic, payload, mid, received_ms, generation, dup) for topic, payload, mid, dup in batch])
        self.last_message_at = now
        self.received += len(batch)
        self._delivered_now += len(batch)
        if (len(inbox) >= self.max_inbox or self.outstanding >= self.max_outstanding) and self.room.is_set():
            self.room.clear()
            self.pauses += 1
        if self._wake is not None and before // self._wake_every != len(inbox) // self._wake_every:
            self._wake()

    # lifecycle

    def start(self, timeout_s: float = 15.0) -> None:
        c = self.client
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(1, 5)
        try:
            if self.protocol == MQTTProtocolVersion.MQTTv5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 3600
                c.connect(self.address.host, self.address.port, self.keepalive_s, clean_start=False, properties=props)
            else:
                c.connect(self.address.host, self.address.port, self.keepalive_s)
        except OSError as exc:
            raise ServerUnavailable("MQTT broker", f"{self.address.host}:{self.address.port}", str(exc)) from exc
        c.loop_start()
        if not (self._connected.wait(timeout_s) and self._subscribed.wait(timeout_s)) or self._connect_error:
            c.loop_stop()
            raise ServerUnavailable(
                "MQTT broker",
                f"{self.address.host}:{self.address.port}",
                self._connect_error or "no CONNACK/SUBACK in time; check HUB_MQTT_URL and the hub's credentials",
            )
        if isinstance(c, SubscriberClient):
            # Only now that the worker drains the inbox: a resumed session's queued messages come before the SUBACK,
            # which a closed gate would leave unread.
            c.read_gate = self.room

    def ack(self, messages: list[Message]) -> int:
        """PUBACK the messages still valid on this connection; returns how many were acknowledged."""
        gen = self.generation
        mids = [m.mid for m in messages if m.generation == gen]
        client = self.client
        if isinstance(client, SubscriberClient):
            client.ack_many(mids)
        else:
            for mid in mids:
                client.ack(mid, 1)
        n = len(mids)
        self.acked += n
        if self.generation == gen:  # a reconnect meanwhile started counting afresh
            self._acked_now += n
        self._reopen()
        return n

    @property
    def outstanding(self) -> int:
        """Messages delivered on the current connection and not acknowledged yet (the inbox included)."""
        return self._delivered_now - self._acked_now

    def drain(self, limit: int) -> list[Message]:
        out: list[Message] = []
        inbox = self.inbox
        while inbox and len(out) < limit:
            out.append(inbox.popleft())
        self._reopen()  # also after an empty drain: a clear that raced an earlier set is undone within a step
        return out

    def _reopen(self) -> None:
        if len(self.inbox) <= self.max_inbox // 2 and self.outstanding <= self.max_outstanding * 3 // 4:
            self.room.set()

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.client.publish(topic, payload, qos=qos)

    def leave_group(self, timeout_s: float = 10.0) -> bool:
        """Leave the shared group and wait for the broker's UNSUBACK; blocking (run it in a thread).

        After the UNSUBACK the broker routes nothing new to this session; messages already
        queued for it still arrive. Unsubscribes every filter this session may hold, also
        when it was resumed only to be drained.
        """
        topics = sorted({*self.subscriptions, *self.obsolete})
        if not topics:
            return True
        _result, mid = self.client.unsubscribe(topics)
        with self._unsubacked:
            return self._unsubacked.wait_for(lambda: mid in self._unsubacks, timeout_s)

    def stop(self, end_session: bool) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        if end_session:
            end_session_of(self.address, self.client_id, self.protocol)


def end_session_of(
    address: MqttAddress, client_id: str, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311
) -> None:
    """Remove a persistent session from the broker by connecting once with a clean one."""
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True if protocol != MQTTProtocolVersion.MQTTv5 else None,
        protocol=protocol,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    client.on_connect = lambda *_a: done.set()
    if protocol == MQTTProtocolVersion.MQTTv5:
        client.connect(address.host, address.port, 10, clean_start=True)
    else:
        client.connect(address.host, address.port, 10)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
