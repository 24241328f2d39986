"""Where each column of a feed's table comes from in its payloads, as `hub plan` shows it: pure."""

from __future__ import annotations

from collections.abc import Iterable

from hub.connector.feed_spec import FeedSpec, PayloadFormat
from hub.connector.model import Feed
from hub.schema.avro import DEVICE_ID, TIME, FeedSchema


def feed_mapping(feed: FeedSpec, schema: FeedSchema) -> list[tuple[str, str]]:
    """(where in the payload, column) for every column of the feed's table, in column order."""
    own = {hub: partner for partner, hub in schema.renamed}
    avro = feed.format == PayloadFormat.avro
    out: list[tuple[str, str]] = []
    device = feed.device_id
    if device.source == "topic":
        source = f"topic level {{device_id}} of {feed.topic}"
    else:
        source = f"Avro field {device.schema_field}" if avro else _where(feed, device.field or DEVICE_ID)
    out.append((source, _column(DEVICE_ID, own)))
    t = feed.time
    if t.source == "received":
        source = "the time the hub received the message"
    elif avro and (t.field or t.schema_field) == t.schema_field:
        source = f"Avro field {t.schema_field}"
    else:
        zone = f", naive times in {t.timezone}" if t.timezone != "UTC" else ""
        source = f"{_where(feed, t.field or TIME)} ({t.format}{zone})"
    out.append((source, _column(TIME, own)))
    for column in schema.columns:
        if column.name in (DEVICE_ID, TIME):
            continue
        if avro:
            out.append((f"Avro field {column.name}", column.name))
            continue
        mapping = feed.mapping(column.name)
        source = _where(feed, mapping.source)
        if mapping.scale != 1.0 or mapping.offset != 0.0:
            source += f" * {mapping.scale:.6g} {'+' if mapping.offset >= 0 else '-'} {abs(mapping.offset):.6g}"
        if column.nullable:
            source += " (optional)"
        out.append((source, column.name))
    return out


def mapping_lines(feeds: Iterable[tuple[str, Feed, FeedSchema]]) -> list[str]:
    """The mapping of each (partner id, feed, schema), as lines for `hub plan`."""
    lines: list[str] = []
    for partner, feed, schema in feeds:
        lines.append(f"mapping {partner}.{feed.name} ({feed.format} payloads -> table {partner}.{feed.name}):")
        pairs = feed_mapping(feed.spec(), schema)
        width = min(max(len(s) for s, _ in pairs), 60)
        lines += [f"  {source:<{width}}  -> {column}" for source, column in pairs]
    return lines


def _where(feed: FeedSpec, reference: str) -> str:
    return f"column {reference}" if feed.format == PayloadFormat.csv else reference


def _column(name: str, own: dict[str, str]) -> str:
    return f"{name} (the schema's {own[name]})" if name in own else name
