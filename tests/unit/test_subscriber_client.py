"""The tuned subscriber's PUBLISH parser and read buffer: what it takes itself and what it leaves to paho."""

from __future__ import annotations

import socket
import struct

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.ingest.subscriber_client import BufferedSocket, Publish, SubscriberClient, parse_publishes


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str | bytes, payload: bytes, mid: int, first: int = 0x32, properties: bytes | None = None) -> bytes:
    name = topic.encode() if isinstance(topic, str) else topic
    body = struct.pack(">H", len(name)) + name + struct.pack(">H", mid)
    if properties is not None:
        body += remaining_length(len(properties)) + properties
    body += payload
    return bytes([first]) + remaining_length(len(body)) + body


def parse(buf: bytes, v5: bool = False) -> tuple[list[Publish], int]:
    out: list[Publish] = []
    return out, parse_publishes(buf, 0, v5, out)


def test_every_complete_qos1_publish_in_the_buffer_is_taken_in_order() -> None:
    buf = (
        publish("partners/a/x/1", b'{"v":1}', 1) + publish("partners/a/x/2", b"", 2) + publish("p/b", b"z" * 300, 65535)
    )
    found, pos = parse(buf)
    assert found == [
        ("partners/a/x/1", b'{"v":1}', 1, False),
        ("partners/a/x/2", b"", 2, False),
        ("p/b", b"z" * 300, 65535, False),
    ]
    assert pos == len(buf)


def test_the_dup_flag_of_a_redelivery_is_kept_and_retain_does_not_change_the_message() -> None:
    found, _ = parse(publish("t/1", b"x", 7, first=0x3B) + publish("t/2", b"y", 8, first=0x33))
    assert found == [("t/1", b"x", 7, True), ("t/2", b"y", 8, False)]


def test_an_incomplete_packet_is_left_for_the_next_read() -> None:
    first, second = publish("t/1", b"a", 1), publish("t/2", b"b" * 200, 2)
    for cut in range(1, len(second)):
        found, pos = parse(first + second[:cut])
        assert found == [("t/1", b"a", 1, False)]
        assert pos == len(first)


@pytest.mark.parametrize(
    "packet",
    [
        publish("t/1", b"x", 0, first=0x30),  # QoS 0
        publish("t/1", b"x", 5, first=0x34),  # QoS 2
        b"\xd0\x00",  # PINGRESP
        b"\x90\x03\x00\x01\x01",  # SUBACK
        publish(b"t/\xff", b"x", 5),  # topic not UTF-8: paho reports it
        b"\x32\x02\x00\x01",  # shorter than a topic length and a packet id
        b"\x32\x04\x00\x09ab",  # topic longer than the packet
        b"\x32\xff\xff\xff\xff\x01",  # remaining length longer than MQTT allows
    ],
)
def test_anything_else_at_the_head_is_left_to_paho(packet: bytes) -> None:
    after = publish("t/9", b"later", 9)
    found, pos = parse(packet + after)
    assert found == []
    assert pos == 0


def test_mqtt5_publishes_without_properties_are_taken_and_with_properties_left_to_paho() -> None:
    plain = publish("t/1", b"x", 1, properties=b"")
    found, pos = parse(plain, v5=True)
    assert found == [("t/1", b"x", 1, False)] and pos == len(plain)
    with_expiry = publish("t/2", b"y", 2, properties=b"\x02\x00\x00\x00\x3c")
    found, pos = parse(plain + with_expiry, v5=True)
    assert found == [("t/1", b"x", 1, False)] and pos == len(plain)


def test_the_pubacks_of_a_batch_go_out_as_one_write_of_four_byte_packets() -> None:
    client = SubscriberClient(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True, on_publishes=print)
    client.ack_many([1, 300, 65535])
    (queued,) = client._out_packet
    assert queued["packet"] == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x2c" + b"\x40\x02\xff\xff"


def test_the_buffered_socket_serves_small_reads_from_one_large_read() -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(b"\x32" + b"abcdef")
        buffered = BufferedSocket(b)
        assert buffered.recv(1) == b"\x32"
        assert buffered.pending() == 6
        assert buffered.recv(2) == b"ab"
        assert buffered.recv(100) == b"cdef"
        assert buffered.pending() == 0
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            buffered.recv(1)
        a.close()
        assert buffered.recv(1) == b""  # the peer closed: paho sees a lost connection
        assert buffered.fileno() == b.fileno()  # select() still works on it
    finally:
        b.close()
