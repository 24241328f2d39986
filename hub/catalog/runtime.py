"""The applied catalog as the data plane sees it: each feed with its config and current schema."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from hub.catalog import store as catalog
from hub.catalog.store import FeedRow
from hub.connector.feed_spec import FeedSpec
from hub.schema.avro import FeedSchema, parse_feed_schema


@dataclass(frozen=True)
class FeedRuntime:
    row: FeedRow
    feed: FeedSpec
    schema: FeedSchema
    schema_id: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.row.partner_id, self.row.name)


async def load_feeds(conn: asyncpg.Connection) -> list[FeedRuntime]:
    await catalog.ensure_catalog(conn)
    out = []
    for row in await catalog.feeds(conn):
        if row.schema_id is None or row.schema_text is None:
            continue
        out.append(
            FeedRuntime(
                row=row,
                feed=FeedSpec.from_config(row.config),
                schema=parse_feed_schema(row.schema_text, row.subject),
                schema_id=row.schema_id,
            )
        )
    return out


async def schema_by_id(conn: asyncpg.Connection, schema_id: int) -> FeedSchema | None:
    text = await conn.fetchval("SELECT schema FROM hub.schemas WHERE id = $1", schema_id)
    return parse_feed_schema(text, f"schema id {schema_id}") if text is not None else None
