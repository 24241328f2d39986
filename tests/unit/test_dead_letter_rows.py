"""Records of the dead-letter topic as rows of hub.dead_letters: every one kept, whatever its headers."""

from __future__ import annotations

from datetime import UTC, datetime

from hub import dead_letters
from hub.landing.dead_letter_rows import dead_letter_row
from tests.unit.kafka_records import consumer_record as record

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_an_ingest_dead_letter_keeps_payload_reason_partner_feed_topic_and_receive_time() -> None:
    headers = [
        *dead_letters.refused("missing_field", "field 'pm25' is missing"),
        (dead_letters.PARTNER, b"uni_air_lab"),
        (dead_letters.FEED, b"air_quality"),
        (dead_letters.MQTT_TOPIC, b"partners/uni_air_lab/stations/s1/air"),
        (dead_letters.RECEIVED_MS, b"1795424100000"),
    ]
    row = dead_letter_row(record(b'{"t": 1}', headers=headers), NOW)
    assert row == (
        datetime.fromtimestamp(1795424100, UTC), "uni_air_lab", "air_quality", "missing_field",
        "field 'pm25' is missing", "ingest", "partners/uni_air_lab/stations/s1/air", b'{"t": 1}',
    )  # fmt: skip


def test_a_dead_letter_with_garbled_or_missing_headers_is_still_kept() -> None:
    row = dead_letter_row(
        record(b"\x00\x01", headers=[(dead_letters.MESSAGE, b"bad \x00 \xff"), ("received_ms", b"x")]), NOW
    )
    assert row[:6] == (NOW, "_unknown", "_unknown", "unknown", "bad \ufffd \ufffd", "ingest")
    assert row[7] == b"\x00\x01"
