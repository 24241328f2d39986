"""Hostile payloads by family, as plain data: each one must end as a dead letter with a reason.

Every payload here is invalid for the feed it is sent to (never a record a lenient decoder could
accept), so each acknowledged one must be a dead letter. Shapes follow the hostile-input property
tests (tests/unit/test_hostile_input.py): deep nesting, cut documents, bad encodings, junk Avro.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

JSON_TOPIC = "air/readings"  # the JSON feed's topic (device id in the payload)
CSV_TOPIC = "csv/hostile-csv"
AVRO_TOPIC = "avro/hostile-avro"
TIME_MS = 1_764_000_000_000  # a plausible event time; freshness is not what these payloads test


@dataclass(frozen=True)
class Family:
    name: str
    topic: str  # under partners/<partner>/
    payloads: list[bytes]


def _reading(**overrides: object) -> bytes:
    doc: dict[str, object] = {"id": "hostile-json", "t": TIME_MS, "pm2_5": 10.0, "rh": 50.0}
    doc.update(overrides)
    return orjson.dumps(doc)


def _zigzag(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _avro_record(device: bytes, time_ms: int, pm25: float) -> bytes:
    return _zigzag(len(device)) + device + _zigzag(time_ms) + struct.pack("<d", pm25) + b"\x00"


def families(max_payload_bytes: int) -> list[Family]:
    valid_avro = _avro_record(b"hostile-avro", TIME_MS, 10.0)
    return [
        Family("JSON deep nesting", JSON_TOPIC, [
            b"[" * 100_000,
            b'{"a":' * 5_000,
            _reading()[:-1] + b', "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            b'{"id": "hostile-json", "t": ' + b"[" * 1_000 + b"1" + b"]" * 1_000 + b"}",
        ]),
        Family("JSON junk and wrong types", JSON_TOPIC, [
            b"", b" ", b"null", b"[]", b"1e999", b'"a string"', _reading()[:-5],
            _reading(pm2_5="high"), _reading(t="yesterday"), _reading(t=-(2**63)), _reading(id=None),
            _reading(pm2_5={"nested": [1, 2]}), b'{"id": "hostile-json", "id": 1, "t": "x"}',
        ]),
        Family("bad encodings", JSON_TOPIC, [
            b"\xff\xfe" + _reading().decode().encode("utf-16-le"),
            b'{"id": "hostile-\xc3\x28", "t": ' + str(TIME_MS).encode() + b', "pm2_5": 1}',
            b'{"id": "hostile-\xed\xa0\x80", "t": ' + str(TIME_MS).encode() + b', "pm2_5": 1}',
            b'{"id": "hostile-\\ud800", "t": ' + str(TIME_MS).encode() + b', "pm2_5": 1}',
            b'{"id": "hostile-\xc0\xaf", "t": ' + str(TIME_MS).encode() + b', "pm2_5": 1}',
            b"\x00" * 64,
        ]),
        Family("size", JSON_TOPIC, [
            _reading(note="x" * (max_payload_bytes + 1)),
            _reading(note="y" * (4 * max_payload_bytes)),
            b" " * (max_payload_bytes + 1),
            b"[" + b"1," * (max_payload_bytes // 2) + b"1]",
        ]),
        Family("CSV", CSV_TOPIC, [
            b"", b"not-a-time,1,2", f"{TIME_MS},abc,2".encode(), f"{TIME_MS};1;2".encode(),
            f'"{TIME_MS},1,2'.encode(), b"\xff\xfe,1,2", b"\x00,\x00,\x00", f"{TIME_MS}".encode(),
            ("1" * 100_000 + ",1,2").encode()[:max_payload_bytes - 1], f"{TIME_MS},1,2,3,4,5".encode(),
        ]),
        Family("Avro wire junk", AVRO_TOPIC, [
            b"", b"\x00", b"\xff" * 16, valid_avro[:-6], _reading(),
            _zigzag(2**40) + b"hostile",  # a string length of a terabyte
            b"\x80" * 12,  # a varint that never ends
            b"\x00\x00\x00\x00\x01" + valid_avro,  # the Confluent wire header where plain Avro is expected
            valid_avro + b"trailing junk",
        ]),
    ]  # fmt: skip
