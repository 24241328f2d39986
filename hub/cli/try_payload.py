"""`hub try FEED --payload FILE`: what ingest and landing would make of a payload, before any device sends it.

The payload goes through the feed's own decoder, the Avro encoder and landing's row builder, the
code the workers run, with the applied config (from the catalog) or a planned one (`--config`,
read from files, nothing applied and no server needed). It prints the row that would land or the
reason a device would get.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from hub.catalog.runtime import load_feeds
from hub.cli.common import console, one_line_errors, settings
from hub.connector.feed_spec import FeedSpec, PayloadFormat
from hub.control.desired import load_desired
from hub.control.mapping import feed_mapping
from hub.db import connection
from hub.errors import ConfigError, NotFound, PayloadError
from hub.ingest.decode import FeedDecoder
from hub.landing.rows import RowBuilder
from hub.schema.avro import FeedSchema
from hub.schema.wire import WireEncoder


@dataclass
class _Target:
    partner: str
    feed: FeedSpec
    schema: FeedSchema
    schema_id: int
    where: str  # "applied" or the config file


@dataclass
class _Record:
    """A Kafka record as landing's row builder reads one."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str = ""
    partition: int = 0
    offset: int = 0


def messages_in(data: bytes, fmt: PayloadFormat) -> list[bytes]:
    """The messages a payload file holds: one JSON document (or JSON Lines), CSV lines, or one Avro body."""
    if fmt is PayloadFormat.avro:
        return [data]
    if fmt is PayloadFormat.csv:
        return [line for line in data.splitlines() if line.strip()]
    try:
        orjson.loads(data)
        return [data]
    except orjson.JSONDecodeError:
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) > 1:
            return lines  # JSON Lines: one message per line (each refused on its own if it is no JSON)
        return [data]


async def _applied(partner: str, feed: str) -> _Target:
    async with connection(settings().endpoints().database_url) as conn:
        feeds = await load_feeds(conn)
    for f in feeds:
        if f.key == (partner, feed):
            return _Target(partner, f.feed, f.schema, f.schema_id, "applied config")
    known = ", ".join(f"{p}.{n}" for p, n in sorted(f.key for f in feeds)) or "none"
    raise NotFound(f"no applied feed {partner}.{feed} (applied: {known}); try a planned one with --config FILE")


def _planned(partner: str, feed: str, config: Path, schemas: Path | None) -> _Target:
    for p in load_desired(config, settings(), schemas):
        for f in p.feeds:
            if (p.id, f.feed.name) == (partner, feed):
                return _Target(partner, f.feed.spec(), f.schema, 1, f"planned config {f.file}")
    raise NotFound(f"{config} has no feed {partner}.{feed}")


def _shown(value: Any, timestamp: bool) -> str:
    if timestamp and type(value) is int:
        return datetime.fromtimestamp(value / 1_000_000, UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime):
        return value.isoformat()
    return "null" if value is None else str(value)


def try_one(target: _Target, payload: bytes, device: str | None) -> tuple[list[tuple[str, str]] | None, str]:
    """(column, value) pairs of the row that would land, or None and the reason a device would get."""
    now_ms = int(time.time() * 1000)
    decoder = FeedDecoder(target.feed, target.schema.parsed, max_payload_bytes=settings().ingest_max_payload_bytes)
    try:
        record = decoder.decode(payload, device, now_ms)
        value = WireEncoder(target.schema_id, target.schema.parsed).encode(record)
    except PayloadError as exc:
        if exc.code == "header_line":
            return None, "skipped: a CSV header line (acknowledged, nothing lands)"
        return None, f"refused ({exc.code}): {exc}"
    built = RowBuilder(target.schema, {target.schema_id: target.schema}.get).build(
        [_Record(record["device_id"].encode(), value, [("received_ms", str(now_ms).encode())])]
    )
    if built.rejected:
        r = built.rejected[0]
        return None, f"refused at landing ({r.reason}): {r.message}"
    times = {c.name for c in target.schema.columns if c.sql_type == "timestamptz"}
    row = built.rows[0]
    pairs = [(c, _shown(v, c in times)) for c, v in zip(built.columns, row, strict=True) if c != "received_at"]
    return pairs, "accepted"


@one_line_errors
def try_payload(
    feed: Annotated[str, typer.Argument(help="The feed: PARTNER.FEED.")],
    payload: Annotated[
        str, typer.Option("--payload", help="A file with the payload (CSV: one message per line), or - for stdin.")
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Try a planned connector config (file or directory) instead of the applied one."),
    ] = None,
    schemas: Annotated[Path | None, typer.Option("--schemas", help="With --config: the .avsc directory.")] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="The device id a topic level would carry (feeds whose id is in the topic)."),
    ] = None,
) -> None:
    """Run a payload through a feed's exact ingest decoding: the row it would land, or why it would be refused."""
    partner, dot, name = feed.rpartition(".")
    if not dot or not partner:
        raise ConfigError(f"feed {feed!r}: name it PARTNER.FEED, e.g. uni_air_lab.air_quality")
    target = _planned(partner, name, config, schemas) if config else asyncio.run(_applied(partner, name))
    if payload == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(payload).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the payload: {exc.strerror or exc}", file=payload) from None
    if target.feed.device_id.source == "topic" and device is None:
        device = "try-device"
        console.print("note: this feed takes the device id from the topic; trying as device 'try-device' (--device)")
    console.print(f"{partner}.{name}, {target.where}:", highlight=False)
    failed = 0
    for i, message in enumerate(messages_in(data, PayloadFormat(target.feed.format)), start=1):
        pairs, verdict = try_one(target, message, device)
        prefix = f"message {i}: " if len(data.splitlines()) > 1 else ""
        if pairs is None:
            failed += verdict.startswith("refused")
            console.print(f"{prefix}{verdict}", highlight=False, markup=False)
            continue
        console.print(f"{prefix}accepted: would land in {partner}.{name} as", highlight=False)
        width = max(len(c) for c, _ in pairs)
        for column, value in pairs:
            console.print(f"  {column:<{width}}  {value}", highlight=False, markup=False)
    if failed:
        sources = ", ".join(f"{s} -> {c}" for s, c in feed_mapping(target.feed, target.schema))
        console.print(f"mapping: {sources}", highlight=False, markup=False)
        raise typer.Exit(1)
