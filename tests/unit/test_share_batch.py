"""The share worker's hot loop without servers: every stream gets exactly what decoding, projecting and encoding
the record gives (hub/share/projection.py), whichever way the loop makes it (a record made of the feed record's
own field bytes, or decoded), for every version of a feed schema, every kind of field and every device."""

from __future__ import annotations

import io
import json
import math
from datetime import timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.agreement.grants import AgreementState, Clause, Form
from hub.agreement.streams import Stream
from hub.errors import PayloadError
from hub.schema.avro import FeedSchema, parse_feed_schema
from hub.schema.slices import avro_string, scanner
from hub.schema.wire import HEADER_SIZE, WireEncoder
from hub.share.batch import Route, Sharer, Sink
from hub.share.projection import NotProjectable, Projector, iso_ms
from hub.share.store import Shared
from tests.unit.kafka_records import consumer_record

KEY = bytes(range(32))
TIME_MS = 1_795_427_940_123
MODE = {"type": "enum", "name": "Mode", "symbols": ["AUTO", "MANUAL", "SUMMER"]}
DEVICES = ("st-001", "st-002", "stä-3", "a/b+c#d", "x" * 70, "")


def feed(version: int, *, micros: bool = False) -> FeedSchema:
    """Version 1, then 2: `count` promoted from int to long, a tag with a uuid type, fields added."""
    fields: list[dict[str, Any]] = [
        {"name": "device_id", "type": "string"},
        {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros" if micros else "timestamp-millis"}},
        {"name": "pm25", "type": "double"},
        {"name": "no2", "type": ["null", "double"], "default": None},
        {"name": "count", "type": "int" if version == 1 else "long"},
        {"name": "mode", "type": MODE},
        {"name": "ok", "type": "boolean"},
        {"name": "note", "type": ["string", "null"]},
        {"name": "battery", "type": ["null", "float"], "default": None},
        {"name": "seen", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}], "default": None},
        {"name": "raw", "type": {"type": "fixed", "name": "Raw", "size": 3}},
        {"name": "either", "type": ["null", "long", "string"], "default": None},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
    ]
    if version >= 2:
        fields += [
            {"name": "blob", "type": "bytes", "default": ""},
            {"name": "score", "type": "float", "default": 0.0},
        ]
    text = json.dumps({"type": "record", "name": "Reading", "namespace": "hub.test", "fields": fields})
    return parse_feed_schema(text, f"reading v{version}")


V1, V2, MICROS = feed(1), feed(2), feed(2, micros=True)
SCHEMAS = {1: V1, 2: V2, 3: MICROS}


def stream(agreement: str, fields: tuple[str, ...], delivery: tuple[str, ...], **clause: Any) -> Stream:
    c = Clause(agreement, 0, "lab", "air", Form.raw, fields, **clause)
    a = AgreementState(agreement, "lab", ("city",), "t", "L", None, None, ("sql", *delivery), (c,))
    return Stream(a, "city", c)


PLAIN = stream("plain", ("pm25", "no2", "count", "mode", "ok", "note", "battery", "seen", "raw"), ("kafka",))
PSEUDO = stream("pseudo", ("pm25", "battery"), ("kafka", "mqtt"), pseudonymise=True, patterns=("st*",))
MIXED = stream("mixed", ("either", "ref", "pm25"), ("kafka",), devices=("st-001", "a/b+c#d"))
MQTT_ONLY = stream("mqtt_only", ("pm25", "mode", "seen"), ("mqtt",))
ADDED = stream("added", ("pm25", "blob", "score"), ("kafka",))  # v1 records lack blob and score: dead letters


def routes(*streams: Stream) -> list[Route]:
    out = []
    for n, x in enumerate(streams):
        p = Projector(x, V2, KEY if x.clause.pseudonymise else None)
        out.append(Route(x, p, WireEncoder(100 + n, p.avro) if x.kafka else None))
    return out


def reading(device: str, i: int, version: int, values: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "device_id": device,
        "time": TIME_MS + i * 1000,
        "pm25": 1.5 + i,
        "no2": None if i % 3 == 0 else 20.25 + i,
        "count": i - 3,
        "mode": MODE["symbols"][i % 3],
        "ok": i % 2 == 0,
        "note": None if i % 4 == 1 else f"n{i}é",
        "battery": None if i % 5 == 0 else 3.5,
        "seen": None if i % 2 else 1_795_427_940_123_456 + i,
        "raw": bytes([i % 256, 1, 2]),
        "either": [None, i * 1000, f"s{i}"][i % 3],
        "ref": "0A8F1E5C-7B2D-4E6F-9A1B-3C4D5E6F7A8B" if i % 2 else "0a8f1e5c-7b2d-4e6f-9a1b-3c4d5e6f7a8b",
    }
    if version >= 2:
        r.update(blob=bytes(i % 7), score=0.5 * i)
    return {**r, **(values or {})}


def wire(schema_id: int, record: dict[str, Any]) -> bytes:
    return WireEncoder(schema_id, SCHEMAS[schema_id].parsed).encode(record)


class Collected:
    def __init__(self) -> None:
        self.kafka: list[tuple[str, bytes, bytes]] = []
        self.mqtt: list[tuple[str, bytes]] = []
        self.dead: list[tuple[str, int, str]] = []

    def sink(self) -> Sink:
        return Sink(
            lambda t, k, v: self.kafka.append((t, k, v)),
            lambda t, p: self.mqtt.append((t, p)),
            lambda x, r, why: self.dead.append((x.id, r.offset, why)),
        )


def shared_by_the_loop(values: list[bytes], rs: list[Route]) -> tuple[Collected, dict[str, Shared]]:
    got = Collected()
    sharer = Sharer(got.sink())
    for sid, schema in SCHEMAS.items():
        sharer.learn(sid, schema)
    shared: dict[str, Shared] = {}
    outcome = sharer.share([consumer_record(v, i) for i, v in enumerate(values)], 0, rs, 0.0, 0.0, shared)
    assert outcome.last == len(values) - 1 and outcome.hold is None
    return got, shared


def what_projection_gives(values: list[bytes], rs: list[Route]) -> Collected:
    """Every record decoded, then per stream: admitted, projected and encoded (as the worker always did)."""
    want = Collected()
    for offset, value in enumerate(values):
        schema = SCHEMAS[int.from_bytes(value[1:HEADER_SIZE], "big")]
        record = fastavro.schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), schema.parsed_raw, None)
        assert isinstance(record, dict)
        for x in rs:
            p = x.projector
            if not p.admits(record["device_id"]):
                continue
            try:
                out = p.project(record, schema.time_units)
                encoded = x.encoder.encode(out) if x.encoder is not None else b""
            except (NotProjectable, PayloadError) as exc:
                want.dead.append((x.id, offset, str(exc)))
                continue
            if x.topic is not None:
                want.kafka.append((x.topic, str(out[p.key_field]).encode(), encoded))
            if x.mqtt:
                want.mqtt.append((p.mqtt_topic(out), p.json(out)))
    return want


def assert_same(values: list[bytes], rs: list[Route]) -> tuple[Collected, dict[str, Shared]]:
    want = what_projection_gives(values, routes(*(x.stream for x in rs)))
    got, shared = shared_by_the_loop(values, rs)
    assert got.kafka == want.kafka
    assert got.mqtt == want.mqtt
    assert got.dead == want.dead
    return got, shared


ALL = (PLAIN, PSEUDO, MIXED, MQTT_ONLY, ADDED)


def test_every_stream_gets_what_projecting_and_encoding_gives_for_every_version() -> None:
    values = [wire(sid, reading(d, i, 1 if sid == 1 else 2)) for i, d in enumerate(DEVICES * 4) for sid in (1, 2, 3)]
    rs = routes(*ALL)
    got, shared = assert_same(values, rs)
    assert {t for t, _k, _v in got.kafka} == {x.topic for x in rs if x.topic}
    assert {x for x, _o, _w in got.dead} == {ADDED.id}  # v1 has no blob, no score
    assert shared[PLAIN.id].records == len(values)
    assert shared[PLAIN.id].last_ms == TIME_MS + (len(DEVICES) * 4 - 1) * 1000
    assert shared[ADDED.id].dead_lettered == len(DEVICES) * 4
    # the current version's records were made of their own bytes where the types allow it ...
    by_id = {x.id: x for x in rs}
    assert by_id[PLAIN.id].splices[2] is not None and by_id[PSEUDO.id].splices[2] is not None
    assert by_id[ADDED.id].splices[2] is not None
    # ... and decoded where they do not: count was an int in v1, time in microseconds, a 3-way union, a uuid
    assert by_id[PLAIN.id].splices[1] is None and by_id[PLAIN.id].splices[3] is None
    assert by_id[PSEUDO.id].splices[1] is not None  # pm25 and battery did not change
    assert by_id[MIXED.id].splices[2] is None


def test_a_uuid_is_shared_as_decoding_and_encoding_gives_it_not_as_the_partner_wrote_it() -> None:
    rs = routes(MIXED)
    got, _ = assert_same([wire(2, reading("st-001", 1, 2))], rs)
    ((_topic, _key, value),) = got.kafka
    assert b"0a8f1e5c" in value and b"0A8F1E5C" not in value


def test_the_pseudonymised_key_is_the_views_pseudonym_as_an_avro_string() -> None:
    rs = routes(PSEUDO)
    got, _ = assert_same([wire(2, reading("st-002", 0, 2))], rs)
    ((_topic, key, value),) = got.kafka
    name = rs[0].projector._pseudonym("st-002")
    assert key == name.encode() and value.startswith(rs[0].header + avro_string(name))
    assert json.loads(got.mqtt[0][1])["time"] == iso_ms(TIME_MS)


def test_records_that_are_no_feed_records_are_passed_over_and_a_short_body_is_fastavros_to_refuse() -> None:
    good = wire(2, reading("st-001", 0, 2))
    got, shared = shared_by_the_loop([b"", b"\x01" + good[1:], b"\x00\x00\x00\x00\x63" + good[5:], good], routes(PLAIN))
    assert len(got.kafka) == 1 and shared[PLAIN.id].records == 1
    with pytest.raises(Exception):  # noqa: B017 - whatever fastavro raises for it, as the worker always did
        shared_by_the_loop([good[:-4]], routes(PLAIN, MQTT_ONLY))


def test_a_delayed_lane_holds_the_first_record_younger_than_the_delay() -> None:
    values = [wire(2, reading("st-001", i, 2)) for i in range(5)]
    sharer = Sharer(Collected().sink())
    sharer.learn(2, V2)
    now = (TIME_MS + 2500) / 1000 + 3600
    outcome = sharer.share([consumer_record(v, i) for i, v in enumerate(values)], 0, routes(PLAIN), 3600.0, now, {})
    assert outcome.last == 2 and outcome.hold == (3, (TIME_MS + 3000) / 1000 + 3600)


def test_iso_ms_gives_the_text_it_always_gave() -> None:
    from datetime import UTC, datetime

    def before(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    for ms in (0, -1, -999, -1000, -1001, 999, 1000, TIME_MS, TIME_MS + 1, 4_102_444_799_999, -62_135_596_800_000):
        assert iso_ms(ms) == before(ms)


def test_scanner_walks_only_what_it_knows_and_bounds_the_fields_fastavro_reads() -> None:
    listed = {"type": "record", "name": "r", "fields": [{"name": "a", "type": {"type": "array", "items": "int"}}]}
    assert scanner(listed) is None
    scan = scanner(V2.parsed_raw)
    assert scan is not None
    value = wire(2, reading("stä-3", 7, 2))
    bounds = scan.bounds(value, HEADER_SIZE)
    assert bounds[-1] == len(value)
    for i, f in enumerate(V2.parsed_raw["fields"]):
        piece = value[bounds[i] : bounds[i + 1]]
        decoded = fastavro.schemaless_reader(io.BytesIO(piece), {"type": "record", "name": "one", "fields": [f]})
        assert isinstance(decoded, dict)
    assert scan.bounds(value, HEADER_SIZE, 3) == bounds[:4]
    for cut in range(HEADER_SIZE, len(value)):
        with pytest.raises((ValueError, IndexError)):
            scan.bounds(value[:cut], HEADER_SIZE)


finite = st.floats(allow_nan=False, allow_infinity=False)
float32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
text = st.text(max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DEVICES),
            st.sampled_from([1, 2, 3]),
            st.fixed_dictionaries(
                {
                    "time": st.integers(-62_000_000_000_000, 250_000_000_000_000),
                    "pm25": finite,
                    "no2": st.none() | finite,
                    "count": st.integers(-(2**31), 2**31 - 1),
                    "mode": st.sampled_from(MODE["symbols"]),
                    "ok": st.booleans(),
                    "note": st.none() | text,
                    "battery": st.none() | float32,
                    "seen": st.none() | st.integers(-62_000_000_000_000_000, 250_000_000_000_000_000),
                    "raw": st.binary(min_size=3, max_size=3),
                    "either": st.none() | st.integers(-(2**63), 2**63 - 1) | text,
                    "score": float32,
                    "blob": st.binary(max_size=40),
                }
            ),
        ),
        max_size=12,
    )
)
def test_any_records_of_any_version_give_every_stream_what_projection_gives(
    records: list[tuple[str, int, dict[str, Any]]],
) -> None:
    values = [wire(sid, reading(d, i, 1 if sid == 1 else 2, v)) for i, (d, sid, v) in enumerate(records)]
    for _, _, v in records:
        if any(isinstance(x, float) and not math.isfinite(x) for x in v.values()):
            return
    if values:
        assert_same(values, routes(*ALL))


def test_lanes_of_one_delay_share_one_read() -> None:
    assert PLAIN.lane == PSEUDO.lane == "now"
    assert stream("later", ("pm25",), ("kafka",), delay=timedelta(hours=1)).lane == "delay-3600s"
