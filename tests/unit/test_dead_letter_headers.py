"""Dead letters keep the hub's headers and add Kafka Connect's, where they apply."""

from __future__ import annotations

from hub import dead_letters


def test_a_landing_dead_letter_names_its_kafka_origin_in_connects_headers() -> None:
    headers = dict(
        dead_letters.refused(
            "duplicate_key", "a different reading is landed", stage="landing", origin=("hub.lab.air", 2, 4411)
        )
    )
    assert headers[dead_letters.REASON] == b"duplicate_key"
    assert headers[dead_letters.STAGE] == b"landing"
    assert headers["__connect.errors.topic"] == b"hub.lab.air"
    assert headers["__connect.errors.partition"] == b"2"
    assert headers["__connect.errors.offset"] == b"4411"
    assert headers["__connect.errors.stage"] == b"TASK_PUT"
    assert headers["__connect.errors.exception.message"] == b"duplicate_key: a different reading is landed"
    assert headers["__connect.errors.connector.name"] == b"hub-land"


def test_an_ingest_dead_letter_has_no_kafka_origin_and_a_converter_stage() -> None:
    headers = dict(dead_letters.refused("missing_field", "field 'pm25' is missing"))
    assert "__connect.errors.topic" not in headers and "__connect.errors.offset" not in headers
    assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"
    assert headers["__connect.errors.connector.name"] == b"hub-ingest"


def test_a_record_landing_cannot_decode_is_a_converter_failure() -> None:
    headers = dict(dead_letters.refused("not_decodable", "bad bytes", stage="landing", origin=("t", 0, 1)))
    assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"


def test_a_replayed_dead_letter_carries_one_verdict_not_two() -> None:
    first = dead_letters.refused("missing_field", "x", stage="landing", origin=("t", 0, 1))
    again = dead_letters.refused(
        "wrong_type", "y", stage="landing", keep=[("partner", b"p"), *first], origin=("t", 1, 9)
    )
    names = [name for name, _ in again]
    assert len(names) == len(set(names))
    assert dict(again)["__connect.errors.offset"] == b"9" and dict(again)[dead_letters.REASON] == b"wrong_type"
