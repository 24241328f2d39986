"""A config too large for one apply is refused up front, from the server's own lock table, and nothing is applied.

The finding: 5,000 feeds planned 20,002 changes, then apply failed after 52 s with "out of shared memory".
Here the same mechanism at a size a test can afford: a PostgreSQL whose lock table holds 200 locks
(max_locks_per_transaction 10 x max_connections 20), and a generated config of 40 feeds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from hub.control.apply import apply
from hub.errors import ConfigError
from hub.settings import HubSettings
from hub.stack import servers
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.process import free_port
from tests.integration.support import REPO, unique

SMALL_LOCK_TABLE = {"max_connections": "20", "max_locks_per_transaction": "10"}


@pytest.fixture(scope="module")
def small_postgres() -> Iterator[str]:
    state = Path(tempfile.mkdtemp(prefix="hub-small-locks-"))
    state.chmod(0o711)  # PostgreSQL runs as `postgres` when we are root: it must enter it
    port = free_port()
    servers.init_postgres(state, "pw")
    servers.start_postgres(state, port, SMALL_LOCK_TABLE)
    try:
        yield f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"
    finally:
        servers.stop_postgres(state)
        shutil.rmtree(state, ignore_errors=True)


def many_feeds(root: Path, n: int) -> tuple[Path, str]:
    partner = unique("bulk").replace("-", "_")
    feeds = "".join(
        f"  - {{name: f{i}, description: gauge {i}, licence: CC-BY-4.0, schema: air_quality, "
        f"topic: 'f{i}/{{device_id}}', format: json, time: {{field: ts, format: iso8601}}}}\n"
        for i in range(n)
    )
    config = root / f"{partner}.yaml"
    config.write_text(
        f"partner: {{id: {partner}, name: Bulk, kind: private, contact: ops@bulk.example}}\nfeeds:\n{feeds}"
    )
    return config, partner


def settings_for(stack: HubSettings, url: str, state: Path) -> HubSettings:
    ep = stack.endpoints()
    return HubSettings(state_dir=state, database_url=url, mqtt_url=ep.mqtt_url, kafka_bootstrap=ep.kafka_bootstrap)


async def relation_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_class"))
    finally:
        await conn.close()


async def test_the_lock_table_really_runs_out_in_one_transaction(small_postgres: str) -> None:
    """The mechanism of the finding, on this server: one transaction creating many tables runs out."""
    conn = await asyncpg.connect(small_postgres)
    try:
        with pytest.raises(asyncpg.OutOfMemoryError, match="out of shared memory"):
            async with conn.transaction():
                for i in range(400):
                    await conn.execute(f"CREATE TABLE t{i} (a int PRIMARY KEY, b text)")
    finally:
        await conn.close()


async def test_a_config_too_large_for_one_apply_is_refused_up_front_and_nothing_is_applied(
    small_postgres: str, spare_stack: HubSettings, tmp_path: Path
) -> None:
    settings = settings_for(spare_stack, small_postgres, tmp_path / "state")
    config, _ = many_feeds(tmp_path, 40)
    await apply(settings, many_feeds(tmp_path, 1)[0], REPO / "schemas", broker=LocalBrokerAuth(settings))
    before = await relation_count(small_postgres)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        await apply(settings, config, REPO / "schemas", broker=LocalBrokerAuth(settings))
    seconds = time.monotonic() - started
    message = str(caught.value)
    assert "too large for one apply" in message and "(40 new feed tables)" in message
    assert "max_locks_per_transaction 10 x (max_connections 20" in message
    assert "Apply at most" in message and "nothing was applied" in message
    assert await relation_count(small_postgres) == before
    assert seconds < 30  # refused before any table was created, not after running out


async def test_as_many_feeds_as_the_refusal_says_fit_are_applied(
    small_postgres: str, spare_stack: HubSettings, tmp_path: Path
) -> None:
    settings = settings_for(spare_stack, small_postgres, tmp_path / "state")
    with pytest.raises(ConfigError) as caught:
        await apply(settings, many_feeds(tmp_path, 40)[0], REPO / "schemas", broker=LocalBrokerAuth(settings))
    fits = int(str(caught.value).split("Apply at most ")[1].split()[0])
    config, partner = many_feeds(tmp_path, fits)
    result = await apply(settings, config, REPO / "schemas", broker=LocalBrokerAuth(settings))
    assert len(result.plan.of_kind("table")) == fits
    conn = await asyncpg.connect(small_postgres)
    try:
        assert await conn.fetchval("SELECT count(*) FROM hub.feeds WHERE partner_id = $1", partner) == fits
    finally:
        await conn.close()
