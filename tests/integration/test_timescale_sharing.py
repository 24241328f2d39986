"""Shared views on TimescaleDB: the same generated SQL over a hypertable and its continuous aggregate, run on a
real TimescaleDB engine (../shared/timescale-wasm). The engine has one session for every client, so the
organisation is entered with SET ROLE (its role settings, such as search_path, do not apply: names are
qualified), and it refuses database-level GRANT/REVOKE, which `hub apply` runs elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from hub.agreement.grants import Clause, FeedInfo
from hub.agreement.model import Form
from hub.control.share_checks import broken_invariants
from hub.control.share_sql import Validity, bootstrap_sql, create_view_sql, org_role_sql, scram_verifier, view_spec
from hub.control.tables import FeedTable, create_table_sql
from hub.schema.avro import load_feed_schema

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timescale

SCHEMA = load_feed_schema(REPO / "schemas" / "air_quality.avsc")
TABLE = FeedTable(
    "ts_lab", "air", SCHEMA.columns, timedelta(days=365), timedelta(days=7), timedelta(hours=1), timedelta(minutes=15)
)
NUMERIC = ("pm25", "pm10", "no2", "temperature_c", "humidity_pct", "battery_v")
FEED = FeedInfo("ts_lab", "air", NUMERIC, frozenset(NUMERIC), timedelta(minutes=15))
DEVICES = ("st-001", "st-002", "st-003", "st_01", "stX01")
HALF_HOUR = timedelta(minutes=30)
ROWS: list[tuple[Any, ...]] = []  # what the engine fixture inserted
CLAUSES = {
    "raw": Clause("ts_raw", 0, "ts_lab", "air", Form.raw, ("pm25", "no2"), ("st-001",), ("st_0*",), delay=HALF_HOUR),
    "pseudo": Clause("ts_pseudo", 0, "ts_lab", "air", Form.raw, ("pm25",), pseudonymise=True),
    "agg": Clause("ts_agg", 0, "ts_lab", "air", Form.aggregate, ("pm25", "no2"), bucket=2 * HALF_HOUR, min_devices=4),
}


@pytest_asyncio.fixture(scope="module")
async def engine(timescale_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(timescale_url)
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    async with conn.transaction():
        for stmt in create_table_sql(TABLE, timescale=True):
            await conn.execute(stmt)
    rows = [
        (
            d,
            start + i * timedelta(minutes=5),
            10.0 + n,
            20.0,
            None if d == "st-001" and i % 2 else 30.0 + n,
            15.0,
            60.0,
            3.7,
        )
        for i in range(48)
        for n, d in enumerate(DEVICES)
    ]
    await conn.executemany(
        "INSERT INTO ts_lab.air (device_id, time, pm25, pm10, no2, temperature_c, humidity_pct, battery_v)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )
    # part of the rollup materialized, the rest computed at query time (a real-time continuous aggregate)
    await conn.execute(
        "CALL refresh_continuous_aggregate('ts_lab.air_rollup', NULL, $1::timestamptz)", now - timedelta(hours=2)
    )
    async with conn.transaction():
        for stmt in bootstrap_sql(timescale=True):
            await conn.execute(stmt)
        for name in ("raw", "pseudo", "agg", "none"):
            for stmt in org_role_sql(f"ts_{name}", scram_verifier("not-used-here"), 3):
                await conn.execute(stmt)
        for name, clause in CLAUSES.items():
            for stmt in create_view_sql(view_spec(clause, f"ts_{name}", FEED, Validity(), rollup_counts=True)):
                await conn.execute(stmt)
    ROWS[:] = rows
    yield conn
    await conn.close()


async def as_org(conn: asyncpg.Connection, org: str, sql: str) -> list[asyncpg.Record]:
    await conn.execute(f"SET ROLE org_{org}")
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.execute("RESET ROLE")


async def test_a_raw_view_over_a_hypertable_keeps_fields_devices_and_delay(engine: asyncpg.Connection) -> None:
    rows = await as_org(engine, "ts_raw", "SELECT * FROM org_ts_raw.ts_lab__air")
    cut = datetime.now(UTC) - timedelta(minutes=30)
    assert list(rows[0].keys()) == ["device_id", "time", "pm25", "no2"]
    assert {r["device_id"] for r in rows} == {"st-001", "st_01"}
    base = ROWS
    assert len(rows) == sum(1 for r in base if r[0] in ("st-001", "st_01") and r[1] <= cut)


async def test_pseudonyms_are_computed_without_pgcrypto(engine: asyncpg.Connection) -> None:
    rows = await as_org(engine, "ts_pseudo", "SELECT DISTINCT device_pseudonym FROM org_ts_pseudo.ts_lab__air")
    assert len(rows) == len(DEVICES) and all(len(r[0]) == 64 for r in rows)


async def test_an_aggregate_view_reads_the_continuous_aggregate_and_suppresses_small_buckets(
    engine: asyncpg.Connection,
) -> None:
    rows = await as_org(engine, "ts_agg", "SELECT bucket, devices, samples, avg_no2 FROM org_ts_agg.ts_lab__air__agg")
    assert rows and all(r["devices"] == 5 and r["samples"] == 60 for r in rows)  # 12 readings of 5 devices an hour
    base = ROWS
    first = min(r["bucket"] for r in rows)
    no2 = [r[4] for r in base if first <= r[1] < first + timedelta(hours=1) and r[4] is not None]
    assert next(r["avg_no2"] for r in rows if r["bucket"] == first) == pytest.approx(sum(no2) / len(no2))


ABUSES = [
    ("SELECT * FROM ts_lab.air", "permission denied for schema ts_lab"),
    ("SELECT * FROM ts_lab.air_rollup", "permission denied for schema ts_lab"),
    ("SELECT count(*) FROM _timescaledb_internal.{chunk}", "permission denied for schema _timescaledb_internal"),
    ("SELECT * FROM _timescaledb_internal.{materialized}", "permission denied for schema _timescaledb_internal"),
    ("SELECT * FROM timescaledb_information.chunks", "permission denied for schema timescaledb_information"),
    ("SELECT * FROM _timescaledb_catalog.hypertable", "permission denied for schema _timescaledb_catalog"),
    ("SELECT add_job('pg_sleep', '1 hour')", "permission denied for function add_job"),
    ("SELECT * FROM org_ts_pseudo.ts_lab__air", "permission denied for schema org_ts_pseudo"),
    ("SELECT * FROM hub_private.pseudonym_keys", "permission denied for schema hub_private"),
]


@pytest.mark.parametrize(("sql", "error"), ABUSES)
async def test_an_organisation_reaches_no_chunk_rollup_or_timescaledb_internals(
    engine: asyncpg.Connection, sql: str, error: str
) -> None:
    chunk = await engine.fetchval(
        "SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_schema = 'ts_lab' LIMIT 1"
    )
    materialized = await engine.fetchval(
        "SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = 'ts_lab'"
    )
    with pytest.raises(asyncpg.PostgresError) as caught:
        await as_org(engine, "ts_none", sql.format(chunk=chunk, materialized=materialized))
    assert error in str(caught.value)


async def test_compressed_chunks_read_the_same_through_the_views(engine: asyncpg.Connection) -> None:
    before = await as_org(engine, "ts_raw", "SELECT count(*) FROM org_ts_raw.ts_lab__air")
    await engine.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('ts_lab.air') c LIMIT 2")
    after = await as_org(engine, "ts_raw", "SELECT count(*) FROM org_ts_raw.ts_lab__air")
    assert before == after


async def test_every_shared_object_keeps_the_invariants(engine: asyncpg.Connection) -> None:
    assert await broken_invariants(engine) == []


async def test_dashboard_panels_run_in_timescaledb_mode_as_the_organisation(engine: asyncpg.Connection) -> None:
    """The panels `hub grafana build` makes for these views, with `$__timeGroup` as Grafana expands it for a
    TimescaleDB datasource (time_bucket), run as each organisation and return the columns they expect."""
    from hub.grafana.check import run_query
    from hub.grafana.dashboards import reading_queries
    from hub.grafana.sql import Field, Source

    fields = {f: Field(f, "number") for f in NUMERIC}
    sources = {
        "raw": Source("org_ts_raw", "ts_lab__air", (fields["pm25"], fields["no2"]), aggregate=False),
        "pseudo": Source("org_ts_pseudo", "ts_lab__air", (fields["pm25"],), aggregate=False, pseudonymised=True),
        "agg": Source("org_ts_agg", "ts_lab__air__agg", (fields["pm25"], fields["no2"]), aggregate=True),
    }
    end = datetime.now(UTC)
    for org, source in sources.items():
        queries = reading_queries(source)
        assert queries
        await engine.execute(f"SET ROLE org_ts_{org}")
        try:
            for q in queries:
                outcome = await run_query(engine, q, end - timedelta(hours=6), end, timedelta(minutes=5), True)
                assert outcome.error is None and outcome.columns == q.columns, (org, q.panel, outcome)
                assert outcome.rows > 0, (org, q.panel)
        finally:
            await engine.execute("RESET ROLE")
