"""`hub plan` changes nothing in the database, in every case: a fresh database, a server where TimescaleDB
is available but not created (it used to run CREATE EXTENSION), and a real TimescaleDB engine.

Each case compares the database's catalogs (schemas, relations, extensions) before and after the plan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from hub.control import apply as applier
from hub.errors import ConfigError
from hub.settings import HubSettings
from tests.integration.support import REPO, unique


async def catalogs(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        return {
            "schemas": [r[0] for r in await conn.fetch("SELECT nspname FROM pg_namespace ORDER BY 1")],
            "relations": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT relnamespace::regnamespace::text, relname, relkind FROM pg_class ORDER BY 1, 2"
                )
            ],
            "extensions": [tuple(r) for r in await conn.fetch("SELECT extname, extversion FROM pg_extension")],
            "roles": [r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles ORDER BY 1")],
        }
    finally:
        await conn.close()


@pytest.fixture
async def fresh_database(stack_settings: HubSettings) -> AsyncIterator[str]:
    """A new, empty database on the test stack's PostgreSQL (no catalog yet)."""
    url = stack_settings.endpoints().database_url
    name = unique("plan_ro")
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_plan_of_a_fresh_database_creates_neither_the_catalog_nor_anything_else(
    stack_settings: HubSettings, fresh_database: str
) -> None:
    settings = stack_settings.replace(database_url=fresh_database)
    before = await catalogs(fresh_database)
    plan = await applier.plan(settings, REPO / "connectors")
    assert await catalogs(fresh_database) == before  # it used to create the schema `hub` and its tables
    assert "hub" not in before["schemas"]
    assert len(plan.of_kind("partner")) == 3
    assert any("catalog (schema hub) is created first" in note for note in plan.notes)


@pytest.fixture(scope="module")
def timescale_settings(stack_settings: HubSettings, timescale_url: str) -> HubSettings:
    return stack_settings.replace(database_url=timescale_url)


@pytest.mark.timescale
async def test_plan_on_timescaledb_plans_hypertables_and_changes_nothing(
    timescale_settings: HubSettings, timescale_url: str
) -> None:
    before = await catalogs(timescale_url)
    assert ("timescaledb", "2.23.0-dev") in before["extensions"]
    plan = await applier.plan(timescale_settings, REPO / "connectors")
    assert await catalogs(timescale_url) == before
    assert plan.timescale
    assert all("hypertable" in c.detail for c in plan.of_kind("table"))


@pytest.mark.timescale
async def test_plan_where_timescaledb_is_available_but_not_preloaded_is_one_line_and_creates_no_extension(
    timescale_settings: HubSettings, timescale_url: str
) -> None:
    # Last in this module: the engine has one session, in which the extension cannot be created again.
    conn = await asyncpg.connect(timescale_url)  # the engine serves one connection at a time: closed before plan
    try:
        await conn.execute("DROP EXTENSION timescaledb")
        assert not await conn.fetchval("SHOW shared_preload_libraries")
    finally:
        await conn.close()
    before = await catalogs(timescale_url)
    with pytest.raises(ConfigError) as caught:
        await applier.plan(timescale_settings, REPO / "connectors")
    # It used to run CREATE EXTENSION here, and a native server answered with a 70-line traceback.
    assert await catalogs(timescale_url) == before
    message = str(caught.value)
    assert "\n" not in message
    assert "not preloaded: add timescaledb to shared_preload_libraries in /" in message
    assert "postgresql.conf" in message and "restart PostgreSQL" in message
