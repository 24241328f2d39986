"""The public catalog: every feed as anyone may see it, for `/catalog.*` (DCAT-AP) and the web page.

Metadata only, never rows: who publishes it, its description, licence, themes, schema fields, whether anyone
may read it without an agreement (open data, decided by hub/agreement/policy.py like every other read), how
fresh it is, the time (and, for a schema with coordinates, the area) its rows cover, and whether agreements
deliver it as live streams. `modified` is when this metadata last changed (the feed's config or schema, an
agreement on it, an agreement coming into force or ending), not when the last row landed: a harvester asking
for `modified_since` gets the feeds whose description changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg

from hub.agreement.model import Agreement
from hub.agreement.policy import World, open_data
from hub.agreement.world import load_world
from hub.catalog import store as catalog
from hub.identifiers import qualified, quote_ident
from hub.schema.avro import parse_feed_schema

LATITUDE = ("lat", "latitude")
LONGITUDE = ("lon", "lng", "long", "longitude")
BBOX_SAMPLE = 10_000  # the area is that of the latest readings, found through the time index


@dataclass(frozen=True)
class Publisher:
    id: str
    name: str
    kind: str  # city | university | private
    contact: str


@dataclass(frozen=True)
class FieldInfo:
    name: str
    sql_type: str
    numeric: bool


@dataclass(frozen=True)
class PublishedFeed:
    key: str  # provider.feed
    name: str
    publisher: Publisher
    description: str
    licence: str
    themes: tuple[str, ...]
    keywords: tuple[str, ...]
    fields: tuple[FieldInfo, ...]
    payload_format: str
    subject: str
    schema_version: int | None
    issued: datetime
    modified: datetime
    open_objects: tuple[str, ...] = ()  # what everyone may read now (open data), by SQL object
    open_forms: tuple[str, ...] = ()
    kafka_streams: bool = False  # some agreement in force delivers it on Kafka share topics
    mqtt_streams: bool = False
    # Filled by `with_coverage` (costs a query or two per feed):
    first: datetime | None = None
    last: datetime | None = None
    last_seen: datetime | None = None  # a device was last heard from
    devices: int = 0
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat

    @property
    def open(self) -> bool:
        return bool(self.open_objects)

    @property
    def access(self) -> str:
        return "open" if self.open else "restricted"

    @property
    def coordinates(self) -> tuple[str, str] | None:
        """(latitude, longitude) field names, when the schema has both as numbers."""
        numeric = {f.name for f in self.fields if f.numeric}
        lat = next((n for n in LATITUDE if n in numeric), None)
        lon = next((n for n in LONGITUDE if n in numeric), None)
        return (lat, lon) if lat and lon else None


@dataclass
class _Changes:
    at: dict[str, list[datetime]] = field(default_factory=dict)

    def add(self, key: str, t: datetime | None) -> None:
        if t is not None:
            self.at.setdefault(key, []).append(t)


async def published_feeds(conn: asyncpg.Connection, now: datetime | None = None) -> tuple[World, list[PublishedFeed]]:
    """Every feed of the catalog, sorted by provider.feed, with what the applied agreements make of it now."""
    now = now or datetime.now(UTC)
    await catalog.ensure_catalog(conn)
    world = await load_world(conn)
    partners = {r["id"]: Publisher(r["id"], r["name"], r["kind"], r["contact"]) for r in await catalog.partners(conn)}
    times = {
        (r["partner_id"], r["name"]): (r["created_at"], r["updated_at"], r["schema_at"])
        for r in await conn.fetch(
            """SELECT f.partner_id, f.name, f.created_at, f.updated_at,
                      (SELECT max(v.created_at) FROM hub.subject_versions v WHERE v.subject = f.subject) AS schema_at
               FROM hub.feeds f"""
        )
    }
    changes = _Changes()
    streams: dict[str, set[str]] = {}
    for r in await conn.fetch("SELECT spec, updated_at, revoked_at FROM hub.agreements"):
        a = Agreement.model_validate(json.loads(r["spec"]))
        for g in a.grants:
            key = f"{a.provider}.{g.feed}"
            for t in (r["updated_at"], r["revoked_at"], a.valid_from, a.valid_until):
                changes.add(key, t if t is not None and t <= now else None)
    for state in world.agreements:
        if state.in_force(now):
            for c in state.clauses:
                streams.setdefault(c.feed_key, set()).update(state.delivery)
    opened: dict[str, list[tuple[str, str]]] = {}
    for access in open_data(world, now):
        opened.setdefault(access.feed, []).append((access.object, str(access.clause.form)))
    out = []
    for f in await catalog.feeds(conn):
        key = f"{f.partner_id}.{f.name}"
        created, updated, schema_at = times[(f.partner_id, f.name)]
        columns = parse_feed_schema(f.schema_text, f.subject).columns if f.schema_text else ()
        publisher = partners.get(f.partner_id) or Publisher(f.partner_id, f.partner_id, "private", "")
        out.append(
            PublishedFeed(
                key=key,
                name=f.name,
                publisher=publisher,
                description=f.description,
                licence=f.licence,
                themes=tuple(f.config.get("themes") or ()),
                keywords=tuple(f.config.get("keywords") or ()),
                fields=tuple(
                    FieldInfo(c.name, c.sql_type, c.numeric) for c in columns if c.name not in ("device_id", "time")
                ),
                payload_format=str(f.config.get("format") or "json"),
                subject=f.subject,
                schema_version=f.schema_version,
                issued=created,
                modified=max([updated, *([schema_at] if schema_at else []), *changes.at.get(key, [])]),
                open_objects=tuple(o for o, _ in opened.get(key, [])),
                open_forms=tuple(sorted({form for _, form in opened.get(key, [])})),
                kafka_streams="kafka" in streams.get(key, set()),
                mqtt_streams="mqtt" in streams.get(key, set()),
            )
        )
    out.sort(key=lambda p: p.key)
    return world, out


async def with_coverage(conn: asyncpg.Connection, feeds: Sequence[PublishedFeed]) -> list[PublishedFeed]:
    """The feeds with the time their rows cover, their devices and freshness, and (with coordinates) their area."""
    table_of = {f"{r.partner_id}.{r.name}": (r.table_schema, r.table_name) for r in await catalog.feeds(conn)}
    seen = {
        f"{r['partner_id']}.{r['feed']}": (r["last_seen"], int(r["devices"]))
        for r in await conn.fetch(
            "SELECT partner_id, feed, max(last_seen) AS last_seen, count(*) AS devices FROM hub.devices "
            "GROUP BY partner_id, feed"
        )
    }
    out = []
    for f in feeds:
        table = qualified(*table_of[f.key])
        # min and max come from the table's time index, not a scan
        first, last = await conn.fetchrow(f'SELECT min("time"), max("time") FROM {table}')
        bbox = None
        coords = f.coordinates
        if coords and last is not None:
            lat, lon = (quote_ident(c) for c in coords)
            row = await conn.fetchrow(
                f"SELECT min({lon}), min({lat}), max({lon}), max({lat}) FROM "
                f'(SELECT {lat}, {lon} FROM {table} ORDER BY "time" DESC LIMIT {BBOX_SAMPLE}) s'
            )
            if row is not None and None not in tuple(row):
                bbox = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
        last_seen, devices = seen.get(f.key, (None, 0))
        out.append(replace(f, first=first, last=last, last_seen=last_seen, devices=devices, bbox=bbox))
    return out
