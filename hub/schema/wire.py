"""The Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, the Avro binary body.

This is what Confluent's serializers, Karapace and the hub's landing workers read. Records come
from `hub.ingest.decode.FeedDecoder`, whose checks make encoding failures rare; when fastavro
still refuses a value, the error becomes PayloadError('wrong_type') naming the field if it can.
"""

from __future__ import annotations

import io
from typing import Any, Final

import fastavro
from fastavro.validation import ValidationError, validate

from hub.errors import PayloadError
from hub.schema.timestamps import without_timestamp_types

MAGIC: Final = 0
HEADER_SIZE: Final = 5
MAX_SCHEMA_ID: Final = 2**32 - 1


def encode_record(schema_id: int, parsed_schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """One record in the wire format (for one-off use; a `WireEncoder` is faster for many)."""
    return WireEncoder(schema_id, parsed_schema).encode(record)


class WireEncoder:
    """Encodes records of one schema version, reusing one buffer. Not shared between threads."""

    __slots__ = ("_buffer", "_raw", "_schema", "header", "schema_id")

    def __init__(self, schema_id: int, parsed_schema: dict[str, Any]) -> None:
        if not 0 <= schema_id <= MAX_SCHEMA_ID:
            raise ValueError(f"schema id {schema_id} does not fit the wire format's 4 unsigned bytes")
        self.schema_id = schema_id
        schema = parsed_schema if parsed_schema.get("__fastavro_parsed") else fastavro.parse_schema(parsed_schema)
        self._schema: Any = schema
        # Records carry timestamps as ints (epoch ms/us), which the schema without timestamp logical
        # types writes to the same bytes, skipping fastavro's per-value logical-type checks.
        self._raw: Any = without_timestamp_types(schema) if isinstance(schema, dict) else schema
        self.header = bytes([MAGIC]) + schema_id.to_bytes(4, "big")  # what every record of it starts with
        self._buffer = io.BytesIO()
        self._buffer.write(self.header)

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = self._buffer
        buffer.seek(HEADER_SIZE)
        buffer.truncate()
        try:
            fastavro.schemaless_writer(buffer, self._raw, record)
        except Exception:
            # A datetime where the raw schema wants a long, or a value that is wrong anyway: the
            # schema as written decides (slow, but rare).
            buffer.seek(HEADER_SIZE)
            buffer.truncate()
            try:
                fastavro.schemaless_writer(buffer, self._schema, record)
            except Exception as exc:
                raise _encoding_error(self._schema, self.schema_id, record, exc) from None
        return buffer.getvalue()


def schema_id_of(data: bytes | None) -> int | None:
    """The schema id in a wire-format message's header; None when it does not start with one."""
    if not data or len(data) < HEADER_SIZE or data[0] != MAGIC:
        return None
    return int.from_bytes(data[1:HEADER_SIZE], "big")


def decode_wire(data: bytes) -> tuple[int, bytes]:
    """(schema id, Avro body) of one wire-format message; PayloadError('not_decodable') if it is not one."""
    if len(data) < HEADER_SIZE:
        raise PayloadError(
            "not_decodable",
            f"message is {len(data)} bytes; the Confluent wire format needs at least {HEADER_SIZE} "
            "(magic byte 0 and a 4-byte schema id)",
        )
    if data[0] != MAGIC:
        raise PayloadError(
            "not_decodable", f"message starts with byte {data[0]:#04x}; the Confluent wire format starts with 0x00"
        )
    return int.from_bytes(data[1:HEADER_SIZE], "big"), bytes(data[HEADER_SIZE:])  # schema_id_of, checked above


def _encoding_error(schema: Any, schema_id: int, record: Any, exc: Exception) -> PayloadError:
    """The slow path: find which field fastavro refused (validate is slow, but only runs on failure)."""
    prefix = f"{schema.get('name', '')}." if isinstance(schema, dict) else ""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(record, dict):
        try:
            validate(record, schema, raise_errors=True)
        except ValidationError as verr:
            problems = verr.errors
            if problems:
                first = problems[0]
                field = str(first.field)
                field = field[len(prefix) :] if prefix and field.startswith(prefix) else field
                expected = " or ".join(_type_name(p.schema) for p in problems if str(p.field) == str(first.field))
                return PayloadError(
                    "wrong_type",
                    f"field {field!r}: expected Avro {expected}, got {_describe(first.datum)} (schema id {schema_id})",
                )
        except Exception:  # noqa: S110 - a failing diagnosis must not hide the original error
            pass
        for name, value in record.items():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return PayloadError(
                        "wrong_type", f"field {name!r}: the string is not valid Unicode text (schema id {schema_id})"
                    )
    return PayloadError("wrong_type", f"the record cannot be encoded with schema id {schema_id}: {reason}")


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, dict):
        inner = avro_type.get("type")
        if inner in ("enum", "fixed", "record"):
            return f"{inner} {avro_type.get('name', '')}".rstrip()
        return str(inner)
    return str(avro_type)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:60] + '...'}"
