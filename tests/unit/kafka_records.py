"""Kafka records as a consumer hands them to the landing worker, for unit tests of row building."""

from __future__ import annotations

from typing import Any

from aiokafka.structs import ConsumerRecord

RECEIVED_MS = 1_795_427_941_000  # what an ingest worker's `received_ms` header carries


def consumer_record(
    value: bytes | None,
    offset: int = 0,
    *,
    partition: int = 0,
    key: bytes = b"k",
    headers: Any = None,
    topic: str = "hub.p.readings",
) -> Any:
    """One record; `headers` default to an ingest worker's `received_ms` (RECEIVED_MS)."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value or b""),
        headers=[("received_ms", str(RECEIVED_MS).encode())] if headers is None else headers,
    )
