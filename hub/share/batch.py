"""The share worker's hot loop: the records of one partition, each read once and shown to every stream of its lane.

`Route`s are worked out once per reload (a stream with its projector, encoder, topic and protocols).
Per record, `Sharer.share` looks its schema up by the 5-byte wire header, finds where the body's
fields lie (hub/schema/slices.py, no decoding), checks the lane's delay, then per stream admits
the device and hands the outputs the stream's record (they send a whole batch at once):

- a Kafka stream whose fields have the writer's very types gets the key (device id or pseudonym)
  and those fields' bytes put together (`Projector.splice`): byte for byte what `Projector.project`
  and the stream's encoder make of the record;
- otherwise (MQTT's JSON, an older schema version, a type that changed, a record the scanner cannot
  walk) the record is decoded once (fastavro, timestamps as plain longs) and projected.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import fastavro

from hub.agreement.streams import Stream
from hub.errors import PayloadError
from hub.schema.avro import FeedSchema
from hub.schema.fast_read import Read, ReadArgs, fast_reader
from hub.schema.slices import Scanner, read_varint, scanner
from hub.schema.wire import HEADER_SIZE, WireEncoder, schema_id_of
from hub.share.projection import DEVICE_ID, TIME, NotProjectable, Projector, Splice
from hub.share.store import Shared

log = logging.getLogger("hub.share")


class Route:
    """One raw stream as the hot loop uses it: what its properties say, worked out once."""

    __slots__ = ("encoder", "every_device", "header", "id", "mqtt", "projector", "splices", "stream", "topic")

    def __init__(self, stream: Stream, projector: Projector, encoder: WireEncoder | None) -> None:
        self.stream = stream
        self.id = stream.id
        self.projector = projector
        self.encoder = encoder  # its share topic's (Kafka delivery), None without
        self.topic = stream.topic if stream.kafka and encoder is not None else None
        self.mqtt = stream.mqtt
        self.every_device = not stream.clause.devices and not stream.clause.patterns
        self.header = encoder.header if encoder is not None else b""
        self.splices: dict[int, Splice | None] = {}  # by writer schema id

    def splice(self, reader: _Reader) -> Splice | None:
        if reader.schema_id not in self.splices:
            ok = self.topic is not None and reader.scanner is not None
            found = self.projector.splice(reader.schema, reader.scanner) if ok else None  # type: ignore[arg-type]
            self.splices[reader.schema_id] = found
        return self.splices[reader.schema_id]

    def counter(self) -> Shared:
        x = self.stream
        return Shared(x.agreement.id, x.consumer, x.clause.feed_key, str(x.clause.form), x.lane)


class _Reader(NamedTuple):
    schema_id: int
    schema: FeedSchema
    units: dict[str, int]  # timestamps read as plain longs: units per second
    read: Read  # `read(body, *read_args)` decodes a body (hub/schema/fast_read.py)
    read_args: ReadArgs
    scanner: Scanner | None  # None: its records are decoded
    device: int  # the field index of device_id, and of time (for the scanner)
    time: int


def _reader_of(schema_id: int, schema: FeedSchema) -> _Reader:
    read = fast_reader(schema.parsed_raw, None)
    scan = scanner(schema.parsed_raw)
    if scan is None or DEVICE_ID not in scan.index or TIME not in scan.index:
        return _Reader(schema_id, schema, schema.time_units, *read, None, -1, -1)
    return _Reader(schema_id, schema, schema.time_units, *read, scan, scan.index[DEVICE_ID], scan.index[TIME])


class Outcome(NamedTuple):
    last: int | None  # the offset of the last record taken (shared, dead-lettered or skipped); None: none
    hold: tuple[int, float] | None  # (offset, until): the lane's delay holds the records from there on


class Sink(NamedTuple):
    """Where the loop puts what it makes: the outputs' `add` / `publish`, and the dead-letter topic."""

    kafka: Callable[[str, bytes, bytes], None]
    mqtt: Callable[[str, bytes], None]
    dead_letter: Callable[[Stream, Any, str], None]


class Sharer:
    """Decodes feed records by their schema id and shares them with the routes of their lane."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.schemas: dict[int, FeedSchema | None] = {}  # by schema id; None: not a feed schema
        self._readers: dict[bytes, _Reader | None] = {}  # by a value's first 5 bytes

    def unknown_ids(self, values: Iterable[bytes | None]) -> set[int]:
        """Schema ids of these values that must be looked up before `share` sees them."""
        out = set()
        for header in {v[:HEADER_SIZE] for v in values if v}:  # a few distinct headers per batch
            if header in self._readers:
                continue
            sid = schema_id_of(header)
            if sid is not None and sid not in self.schemas:
                out.add(sid)
        return out

    def learn(self, schema_id: int, schema: FeedSchema | None) -> None:
        self.schemas[schema_id] = schema

    def _reader(self, value: bytes | None) -> _Reader | None:
        if not value or len(value) < HEADER_SIZE:
            return None
        header = bytes(value[:HEADER_SIZE])
        if header in self._readers:
            return self._readers[header]
        sid = schema_id_of(value)
        schema = self.schemas.get(sid) if sid is not None else None
        found = None if sid is None or schema is None else _reader_of(sid, schema)
        if sid is not None and sid in self.schemas:  # remembered once the id was looked up
            self._readers[header] = found
        return found

    def share(
        self,
        records: Sequence[Any],
        expected: int,
        routes: Sequence[Route],
        delay_s: float,
        now: float,
        shared: dict[str, Shared],
    ) -> Outcome:
        """Share `records` (one partition, in offset order) from offset `expected` on."""
        kafka, mqtt, dead_letter = self.sink
        readers = self._readers
        walks: dict[int, int] = {}  # per schema id: how many of its fields the routes need walked
        last = None
        for r in records:
            if r.offset < expected:
                continue
            value = r.value
            reader = readers.get(value[:HEADER_SIZE]) if value else None
            if reader is None:
                reader = self._reader(value)
            if reader is None:
                log.warning("%s[%d]@%d is not a feed record of a known schema: not shared", r.topic, r.partition,
                            r.offset)  # fmt: skip
                last = r.offset
                continue
            units = reader.units
            record: dict[str, Any] | None = None
            walk = walks.get(reader.schema_id)
            if walk is None:
                walk = walks[reader.schema_id] = _fields_to_walk(reader, routes)
            walked = _walk(reader, value, walk) if walk else None
            if walked is not None:
                bounds, device, device_key = walked
                t = read_varint(value, bounds[reader.time])[0]
            else:
                bounds, device_key = None, b""
                record = _decode(reader, value)
                device, t = record[DEVICE_ID], record[TIME]
            unit = units.get(TIME, 1000)
            if delay_s:
                seconds = t / unit
                if seconds > now - delay_s:
                    return Outcome(last, (r.offset, seconds + delay_s))
            t_ms = t if unit == 1000 else t * 1000 // unit
            for x in routes:
                p = x.projector
                if not x.every_device and not p.admits(device):
                    continue
                counter = shared.get(x.id)
                if counter is None:
                    counter = shared[x.id] = x.counter()
                splice = x.splice(reader) if bounds is not None else None
                out = None
                try:
                    if x.mqtt or splice is None:
                        if record is None:
                            record = _decode(reader, value)
                        out = p.project(record, units)
                    if x.topic is not None:
                        if splice is not None:
                            assert bounds is not None
                            if p.key is None:
                                key, key_avro = device_key, value[bounds[splice.device] : bounds[splice.device + 1]]
                            else:
                                key, key_avro = p.key_bytes(device)
                            body = [value[bounds[i] : bounds[i + 1]] for i in splice.rest]
                            kafka(x.topic, key, b"".join([x.header, key_avro, *body]))
                        else:
                            assert out is not None and x.encoder is not None
                            encoded = x.encoder.encode(out)
                            kafka(x.topic, str(out[p.key_field]).encode(), encoded)
                except (NotProjectable, PayloadError) as exc:
                    dead_letter(x.stream, r, str(exc))
                    counter.dead_lettered += 1
                    continue
                if x.mqtt:
                    assert out is not None
                    mqtt(p.mqtt_topic(out), p.json(out))
                counter.records += 1
                if t_ms > counter.last_ms:
                    counter.last_ms = t_ms
            last = r.offset
        return Outcome(last, None)


def _fields_to_walk(reader: _Reader, routes: Sequence[Route]) -> int:
    """The first fields of `reader`'s records that `routes` need walked (to the last one a splice takes); 0: none."""
    if reader.scanner is None:
        return 0
    last = max(reader.device, reader.time)
    for x in routes:
        splice = x.splice(reader)
        if splice is not None:
            last = max(last, splice.device, *splice.rest)
    return last + 1


def _walk(reader: _Reader, value: bytes, count: int) -> tuple[list[int], str, bytes] | None:
    """(the bounds of the body's first `count` fields, its device id, the id's UTF-8 bytes); None when the scanner
    cannot walk them (fastavro then decides)."""
    scan = reader.scanner
    if scan is None:
        return None
    try:
        bounds = scan.bounds(value, HEADER_SIZE, count)
        length, start = read_varint(value, bounds[reader.device])
        raw = value[start : start + length]
        return bounds, raw.decode(), raw  # UTF-8, as fastavro would insist
    except (ValueError, IndexError):
        return None


def _decode(reader: _Reader, value: bytes) -> dict[str, Any]:
    body = io.BytesIO(value)  # shares value's bytes
    body.seek(HEADER_SIZE)
    try:
        record: dict[str, Any] = reader.read(body, *reader.read_args)
    except Exception:  # schemaless_reader decides (and raises as it always did)
        record = fastavro.schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), reader.schema.parsed_raw, None)  # type: ignore[assignment]
    return record
