"""The catalog's feeds as people and scripts see them: `hub feeds --json` and the API's `GET /feeds`."""

from __future__ import annotations

from typing import Any

import asyncpg

from hub.catalog import store as catalog


async def feed_summaries(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """One JSON-ready object per feed (the catalog must exist: see `catalog.ensure_catalog`).

    Keys: partner, feed, table (schema-qualified), kafka_topic, mqtt_topic, subject, schema_id,
    schema_version, format, licence, description, rows_landed.
    """
    landed = {
        (r["partner_id"], r["feed"]): int(r["rows"])
        for r in await conn.fetch(
            "SELECT partner_id, feed, coalesce(sum(rows), 0) AS rows FROM hub.land_counters GROUP BY partner_id, feed"
        )
    }
    return [
        {
            "partner": f.partner_id,
            "feed": f.name,
            "table": f"{f.table_schema}.{f.table_name}",
            "kafka_topic": f.kafka_topic,
            "mqtt_topic": f.mqtt_filter,
            "subject": f.subject,
            "schema_id": f.schema_id,
            "schema_version": f.schema_version,
            "format": f.config.get("format"),
            "licence": f.licence,
            "description": f.description,
            "rows_landed": landed.get((f.partner_id, f.name), 0),
        }
        for f in await catalog.feeds(conn)
    ]
