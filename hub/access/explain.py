"""`hub explain`, `hub access` and `hub orgs`: the policy decision over the applied catalog, for people and
scripts. The decision itself is hub/agreement/policy.py; this module only reads the world it decides over."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from hub.agreement.policy import Access, Decision, Question, decide, readable
from hub.agreement.world import load_world
from hub.catalog import agreements as shared
from hub.catalog import store as catalog


async def explain(conn: asyncpg.Connection, question: Question) -> Decision:
    await catalog.ensure_catalog(conn)
    return decide(question, await load_world(conn))


async def access(conn: asyncpg.Connection, org: str, at: datetime | None = None) -> tuple[bool, list[Access]]:
    """(whether `org` is known, everything it can read at `at`)."""
    await catalog.ensure_catalog(conn)
    world = await load_world(conn)
    return org in world.orgs, readable(world, org, at or datetime.now(UTC))


async def organisations(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every organisation, partners included: its role, whether the role exists, what it publishes and reads."""
    await catalog.ensure_catalog(conn)
    world = await load_world(conn)
    roles = await shared.org_roles(conn)
    now = datetime.now(UTC)
    out = []
    for org in sorted(world.orgs.values(), key=lambda o: o.id):
        reads = readable(world, org.id, now)
        out.append(
            {
                "id": org.id,
                "name": org.name,
                "kind": org.kind,
                "publishes": sorted(f.key for f in world.feeds.values() if f.provider == org.id),
                "role": org.role,
                "role_exists": org.role in roles,
                "reads": sorted({a.object for a in reads}),
            }
        )
    return out
