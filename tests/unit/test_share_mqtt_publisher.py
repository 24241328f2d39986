"""The share worker's tuned MQTT publisher: the QoS 1 PUBLISH packets it writes (as ingest's parser reads them) and
the PUBACKs it takes from its read buffer, or that paho reads for it."""

from __future__ import annotations

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.ingest.subscriber_client import Publish, parse_publishes
from hub.share.mqtt_publisher import TUNED, Ack, PublisherClient, parse_pubacks, publish_packet, remaining_length


def test_publish_packets_are_read_back_as_the_qos1_publishes_they_are() -> None:
    payloads = [b"", b'{"pm25":1.5}', b"x" * 200, b"y" * 20_000]
    buf = b"".join(publish_packet(f"share/c/p/f/d{i}".encode(), p, i + 1, v5=True) for i, p in enumerate(payloads))
    out: list[Publish] = []
    assert parse_publishes(buf, 0, True, out) == len(buf)
    assert out == [(f"share/c/p/f/d{i}", p, i + 1, False) for i, p in enumerate(payloads)]
    v311: list[Publish] = []
    parse_publishes(publish_packet(b"t/\xc3\xa4", b"z", 65535, v5=False), 0, False, v311)
    assert v311 == [("t/ä", b"z", 65535, False)]


def test_remaining_length_is_mqtts_variable_byte_integer() -> None:
    assert [remaining_length(n) for n in (0, 127, 128, 16_383, 16_384, 268_435_455)] == [
        b"\x00", b"\x7f", b"\x80\x01", b"\xff\x7f", b"\x80\x80\x01", b"\xff\xff\xff\x7f",
    ]  # fmt: skip


def test_a_run_of_pubacks_is_taken_with_their_reason_codes_and_the_rest_left_to_paho() -> None:
    acks = b"\x40\x02\x00\x01" + b"\x40\x03\x00\x02\x87" + b"\x40\x04\x01\x00\x00\x00"
    pingresp = b"\xd0\x00"
    out: list[Ack] = []
    assert parse_pubacks(acks + pingresp + b"\x40\x02\x00\x09", 0, out) == len(acks)
    assert out == [(1, 0), (2, 0x87), (256, 0)]
    for cut in range(1, 4):  # a PUBACK split across reads: paho reads the rest
        partial: list[Ack] = []
        assert parse_pubacks(acks[:4] + acks[4 : 4 + cut], 0, partial) == 4
        assert partial == [(1, 0)]
    long_properties: list[Ack] = []
    assert parse_pubacks(b"\x40\x80\x01" + bytes(128), 0, long_properties) == 0 and not long_properties


def test_a_puback_paho_read_itself_reaches_on_pubacks() -> None:
    got: list[Ack] = []
    client = PublisherClient(
        CallbackAPIVersion.VERSION2, client_id="t", protocol=MQTTProtocolVersion.MQTTv5, on_pubacks=got.extend
    )
    assert TUNED
    client._in_packet["packet"] = bytearray(b"\x00\x07\x87")
    client._handle_pubackcomp("PUBACK")
    client._in_packet["packet"] = bytearray(b"\x01\x00")
    client._handle_pubackcomp("PUBACK")
    assert got == [(7, 0x87), (256, 0)]


def test_a_batch_is_queued_as_one_write_with_paho_packet_ids() -> None:
    client = PublisherClient(
        CallbackAPIVersion.VERSION2, client_id="t", protocol=MQTTProtocolVersion.MQTTv5, on_pubacks=lambda _a: None
    )
    mids = client.publish_batch([("share/a/b/c/d1", b"1"), ("share/a/b/c/d2", b"2")])
    assert mids == [1, 2]
    (queued,) = client._out_packet
    out: list[Publish] = []
    parse_publishes(queued["packet"], 0, True, out)
    assert out == [("share/a/b/c/d1", b"1", 1, False), ("share/a/b/c/d2", b"2", 2, False)]
