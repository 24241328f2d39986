"""The world the policy decides over, read from the applied catalog: organisations, feeds, agreements."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import asyncpg

from hub.agreement.grants import AgreementState, FeedInfo, Org, resolve
from hub.agreement.model import Agreement
from hub.agreement.policy import World
from hub.catalog import agreements as catalog_agreements
from hub.catalog import store as catalog
from hub.catalog.store import FeedRow
from hub.connector.feed_spec import parse_duration
from hub.schema.avro import Column, parse_feed_schema


def feed_info(provider: str, name: str, columns: Iterable[Column], rollup: timedelta) -> FeedInfo:
    cols = [c for c in columns if c.name not in ("device_id", "time")]
    return FeedInfo(
        provider=provider,
        name=name,
        fields=tuple(c.name for c in cols),
        numeric=frozenset(c.name for c in cols if c.numeric),
        rollup=rollup,
    )


def feed_info_of_row(f: FeedRow) -> FeedInfo:
    columns = parse_feed_schema(f.schema_text, f.subject).columns if f.schema_text else ()
    rollup = f.config.get("rollup")
    return feed_info(f.partner_id, f.name, columns, parse_duration(rollup) if rollup else timedelta(minutes=15))


async def load_world(conn: asyncpg.Connection) -> World:
    """The applied state (the catalog must exist: see `catalog.ensure_catalog`)."""
    orgs = {r["id"]: Org(r["id"], r["name"], r["kind"], partner=True) for r in await catalog.partners(conn)}
    for r in await catalog_agreements.organisations(conn):
        orgs[r["id"]] = Org(r["id"], r["name"], r["kind"], partner=False)
    feeds = {info.key: info for info in (feed_info_of_row(f) for f in await catalog.feeds(conn))}
    states: list[AgreementState] = []
    for row in (await catalog_agreements.agreements(conn)).values():
        agreement = Agreement.model_validate(row.spec)
        if any(f"{agreement.provider}.{g.feed}" not in feeds for g in agreement.grants):
            continue  # a feed removed by hand since: nothing of it can be read
        states.append(
            resolve(
                agreement,
                feeds,
                file=row.source,
                line=row.line,
                clause_lines=row.clause_lines,
                revoked=row.revoked,
            )
        )
    return World(orgs, feeds, tuple(states))
