"""The benchmark's messages: realistic air-quality readings, and the event time read back from a record."""

from __future__ import annotations

import orjson

DEVICES = 1000


def make_lines(n: int, start_ms: int) -> list[bytes]:
    """Realistic readings (~130 bytes) from DEVICES stations; (device, time) unique per line."""
    import random

    rng = random.Random(n)
    out = []
    for i in range(n):
        doc = {
            "id": f"st-{i % DEVICES:04d}",
            "t": start_ms + i,
            "pm2_5": round(rng.uniform(2, 40), 1),
            "pm10": round(rng.uniform(5, 70), 1),
            "no2": round(rng.uniform(5, 90), 1),
            "temperature_c": round(rng.uniform(-5, 32), 1),
            "rh": round(rng.uniform(25, 98), 1),
            "pressure_hpa": round(rng.uniform(980, 1040), 1),
            "battery_v": round(rng.uniform(3.3, 4.2), 2),
        }
        out.append(orjson.dumps(doc))
    return out


def event_time_ms(value: bytes | None) -> float | None:
    """The event time (ms) from a wire-format record of the bench feed: device_id string, then time long."""
    if not value or len(value) < 6:
        return None
    body = value[5:]
    # Avro: zig-zag varint length + string bytes, then the zig-zag varint time.
    pos, length = _varint(body, 0)
    pos += length
    _, t = _varint(body, pos)
    return float(t)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return pos, (result >> 1) ^ -(result & 1)
