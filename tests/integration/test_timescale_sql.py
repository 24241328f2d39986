"""The TimescaleDB SQL of feed tables and landing, run on a real TimescaleDB engine.

The engine is TimescaleDB 2.23 compiled to WASM (../shared/timescale-wasm): one session for
every client, no COPY (it kills the engine), background jobs only through `CALL run_job`. So
rows go in through the landing worker's other statements (a staging table filled by INSERT,
then `INSERT .. SELECT .. ON CONFLICT DO NOTHING`; and the row-by-row insert), and policies
are run by hand. Skipped, saying why, where ../shared or node is missing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hub.access import queries
from hub.catalog import store as catalog
from hub.control.tables import FeedTable, add_columns_sql, alter_table_sql, create_table_sql
from hub.identifiers import quote_ident
from hub.landing.staging import SEQ, land_from_staging_sql, staging_sql
from hub.schema.avro import Column, load_feed_schema

REPO = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 11, 2, tzinfo=UTC)  # a day the test fills with readings, 15 minutes apart

pytestmark = pytest.mark.timescale


def air_quality_table(schema: str, **changes: Any) -> FeedTable:
    """The example air-quality feed's table, under its own schema name."""
    feed_schema = load_feed_schema(REPO / "schemas" / "air_quality.avsc")
    settings: dict[str, Any] = {
        "columns": feed_schema.columns,
        "retention": timedelta(days=365),
        "compress_after": timedelta(days=7),
        "chunk_interval": timedelta(days=1),
        "rollup": timedelta(minutes=15),
    }
    settings.update(changes)
    return FeedTable(schema=schema, table="air_quality", **settings)


COLUMNS = ["device_id", "time", "pm25", "pm10", "no2", "temperature_c", "humidity_pct", "battery_v", "received_at"]


def readings(devices: list[str], start: datetime, n: int, step: timedelta, pm25: float = 0.0) -> list[tuple[Any, ...]]:
    """Rows in landing's column order; pm25 counts up from `pm25` per device."""
    return [
        (d, start + i * step, pm25 + i, 2.0 * i, None, 20.0, 50.0, None, start + i * step)
        for d in devices
        for i in range(n)
    ]


async def land(
    conn: asyncpg.Connection, t: FeedTable, rows: list[tuple[Any, ...]], differing: list[list[str]] | None = None
) -> int:
    """Landing's staged insert, with INSERT instead of COPY (which the engine cannot take): rows inserted.

    `differing` gets, for each record not inserted, the columns in which it differs from the landed row.
    """
    cols = ", ".join(quote_ident(c) for c in COLUMNS)
    staging = f"_stage_{t.schema}"
    async with conn.transaction():
        await conn.execute(staging_sql(t.name, cols, staging))
        params = ", ".join(f"${i + 1}" for i in range(len(COLUMNS) + 1))
        await conn.executemany(
            f"INSERT INTO {quote_ident(staging)} ({cols}, {SEQ}) VALUES ({params})",
            [(*row, i) for i, row in enumerate(rows)],
        )
        found = await conn.fetch(land_from_staging_sql(t.name, COLUMNS, staging))
    if differing is not None:
        differing += [list(r["differs"]) for r in sorted(found, key=lambda r: r["seq"])]
    return len(rows) - len(found)


async def land_one_by_one(conn: asyncpg.Connection, t: FeedTable, rows: list[tuple[Any, ...]]) -> int:
    """Landing's fallback, row by row (used when the database refuses a row of a batch)."""
    return sum([await land(conn, t, [row]) for row in rows])


def insert_row_sql(target: str, columns: list[str]) -> str:
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    cols = ", ".join(quote_ident(c) for c in columns)
    return f'INSERT INTO {target} ({cols}) VALUES ({params}) ON CONFLICT ("device_id", "time") DO NOTHING'


async def create(conn: asyncpg.Connection, t: FeedTable) -> None:
    """As `hub apply` runs it: every statement in one transaction."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(t.schema)} CASCADE")
    async with conn.transaction():
        for stmt in create_table_sql(t, timescale=True):
            await conn.execute(stmt)


async def jobs(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT proc_name, job_id FROM timescaledb_information.jobs
           WHERE hypertable_schema = $1 OR hypertable_name IN (
               SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates
               WHERE view_schema = $1)""",
        schema,
    )
    return {r["proc_name"]: r["job_id"] for r in rows}


async def compressed_chunks(conn: asyncpg.Connection, t: FeedTable) -> int:
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM timescaledb_information.chunks
               WHERE hypertable_schema = $1 AND hypertable_name = $2 AND is_compressed""",
            t.schema,
            t.table,
        )
    )


async def test_a_feed_table_is_a_compressed_hypertable_with_retention_and_a_real_time_rollup_on_timescaledb(
    timescale_url: str,
) -> None:
    t = air_quality_table("ts_feed")
    conn = await asyncpg.connect(timescale_url)
    try:
        await create(conn, t)
        dim = await conn.fetchrow(
            """SELECT column_name, time_interval FROM timescaledb_information.dimensions
               WHERE hypertable_schema = $1 AND hypertable_name = $2""",
            t.schema,
            t.table,
        )
        assert (dim["column_name"], dim["time_interval"]) == ("time", timedelta(days=1))
        segment = await conn.fetch(
            """SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc
               FROM timescaledb_information.compression_settings WHERE hypertable_schema = $1 ORDER BY attname""",
            t.schema,
        )
        assert [tuple(r) for r in segment] == [("device_id", 1, None, None), ("time", None, 1, False)]
        found = await jobs(conn, t.schema)
        assert set(found) == {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"}
        assert (
            await conn.fetchval(
                "SELECT materialized_only FROM timescaledb_information.continuous_aggregates WHERE view_schema = $1",
                t.schema,
            )
            is False
        )

        # Ten days of hourly readings from two stations, plus DAY every 15 minutes; landed twice: once.
        old = readings(["st-a", "st-b"], DAY - timedelta(days=10), 240, timedelta(hours=1))
        day = readings(["st-a", "st-b"], DAY, 96, timedelta(minutes=15), pm25=1000.0)
        assert await land(conn, t, old + day) == len(old) + len(day)
        assert await land(conn, t, old + day) == 0

        # The compression policy, run by hand, compresses chunks older than a week; then
        # redelivered rows there are still recognised, and late ones still land.
        await conn.execute(f"CALL run_job({found['policy_compression']})")
        assert await compressed_chunks(conn, t) > 0
        late = readings(["st-c"], DAY - timedelta(days=9), 3, timedelta(hours=1))
        assert await land_one_by_one(conn, t, old[:5] + late) == len(late)
        assert await land(conn, t, old[5:50] + late) == 0
        # A different reading for a key in a compressed chunk is told apart from the same one again.
        other = [(*old[7][:2], -1.0, *old[7][3:])]
        differing: list[list[str]] = []
        assert await land(conn, t, [old[6], *other], differing) == 0
        assert differing == [[], ["pm25"]]

        await conn.execute(f"CALL refresh_continuous_aggregate({queries_literal(t.rollup_name)}, NULL, NULL)")
        day_rows = await conn.fetch(queries.rollup_day_sql(t.rollup_name), DAY, DAY + timedelta(days=1), "st-a")
        assert [(r["bucket"], r["samples"], r["avg_pm25"]) for r in day_rows] == [
            (DAY + i * timedelta(minutes=15), 1, 1000.0 + i) for i in range(96)
        ]
        # Real-time: a reading newer than the last refresh is in the rollup at once.
        now = datetime.now(UTC).replace(microsecond=0)
        assert await land(conn, t, [("st-a", now, 7.0, 1.0, None, 20.0, 50.0, None, now)]) == 1
        bucket = await conn.fetchrow(
            f"SELECT samples, avg_pm25 FROM {t.rollup_name} WHERE device_id = 'st-a' AND bucket > $1",
            now - timedelta(hours=1),
        )
        assert (bucket["samples"], bucket["avg_pm25"]) == (1, 7.0)

        latest = await conn.fetch(queries.latest_sql(t.name), timedelta(days=3650), None)
        assert [(r["device_id"], r["time"]) for r in latest] == [
            ("st-a", now),
            ("st-b", DAY + 95 * timedelta(minutes=15)),
            ("st-c", DAY - timedelta(days=9) + 2 * timedelta(hours=1)),
        ]

        # Retention: a reading older than the feed keeps is dropped with its chunk.
        ancient = DAY - timedelta(days=400)
        assert await land(conn, t, readings(["st-a"], ancient, 1, timedelta(hours=1))) == 1
        await conn.execute(f"CALL run_job({found['policy_retention']})")
        assert await conn.fetchval(f"SELECT count(*) FROM {t.name} WHERE time < $1", DAY - timedelta(days=365)) == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {t.name}") == len(old) + len(day) + len(late) + 1
    finally:
        await conn.close()


async def test_a_new_column_on_a_compressed_hypertable_lands_and_appears_in_its_rebuilt_rollup_on_timescaledb(
    timescale_url: str,
) -> None:
    t = air_quality_table("ts_evolve")
    conn = await asyncpg.connect(timescale_url)
    try:
        await create(conn, t)
        assert await land(conn, t, readings(["st-a"], DAY - timedelta(days=10), 48, timedelta(hours=1))) == 48
        await conn.execute(f"CALL run_job({(await jobs(conn, t.schema))['policy_compression']})")
        assert await compressed_chunks(conn, t) > 0

        co2 = Column("co2_ppm", "double precision", nullable=True, numeric=True)
        evolved = air_quality_table("ts_evolve", columns=(*t.columns, co2))
        async with conn.transaction():
            for stmt in add_columns_sql(evolved, [c.name for c in t.columns], timescale=True):
                await conn.execute(stmt)
        stmt = insert_row_sql(t.name, [*COLUMNS, "co2_ppm"])
        await conn.execute(stmt, "st-a", DAY, 5.0, 1.0, None, 20.0, 50.0, None, DAY, 415.0)
        late = DAY - timedelta(days=9, minutes=-30)  # in a compressed chunk, between two older readings
        await conn.execute(stmt, "st-a", late, 5.0, 1.0, None, 20.0, 50.0, None, DAY, 420.0)

        assert set(await jobs(conn, t.schema)) == {
            "policy_compression",
            "policy_retention",
            "policy_refresh_continuous_aggregate",
        }
        await conn.execute(f"CALL refresh_continuous_aggregate({queries_literal(t.rollup_name)}, NULL, NULL)")
        got = await conn.fetch(f"SELECT bucket, avg_co2_ppm FROM {t.rollup_name} WHERE avg_co2_ppm IS NOT NULL")
        assert sorted((r["bucket"], r["avg_co2_ppm"]) for r in got) == [
            (late, 420.0),
            (DAY, 415.0),
        ]
        assert await conn.fetchval(f"SELECT count(*) FROM {t.name} WHERE co2_ppm IS NULL") == 48
    finally:
        await conn.close()


async def test_widening_a_column_of_a_compressed_hypertable_decompresses_retypes_and_compresses_it_again(
    timescale_url: str,
) -> None:
    count = Column("vehicles", "integer", nullable=False, numeric=True)
    base = (Column("device_id", "text", False, False), Column("time", "timestamptz", False, False), count)
    t = FeedTable("ts_widen", "counts", base, timedelta(days=365), timedelta(days=2), timedelta(days=1),
                  timedelta(minutes=15))  # fmt: skip
    conn = await asyncpg.connect(timescale_url)
    try:
        await create(conn, t)
        await conn.execute(
            f"INSERT INTO {t.name} (device_id, time, vehicles) SELECT 'j1', $1::timestamptz + i * interval '1 hour', i"
            " FROM generate_series(0, 239) i",
            DAY - timedelta(days=10),
        )
        await conn.execute(f"CALL run_job({(await jobs(conn, t.schema))['policy_compression']})")
        assert await compressed_chunks(conn, t) > 0

        wide = Column("vehicles", "bigint", nullable=False, numeric=True)
        widened = FeedTable(t.schema, t.table, (*base[:2], wide), t.retention, t.compress_after, t.chunk_interval,
                            t.rollup)  # fmt: skip
        async with conn.transaction():
            for stmt in alter_table_sql(widened, retype=[wide], timescale=True):
                await conn.execute(stmt)
        assert (
            await conn.fetchval(
                """SELECT data_type FROM information_schema.columns
                   WHERE table_schema = $1 AND table_name = $2 AND column_name = 'vehicles'""",
                t.schema,
                t.table,
            )
            == "bigint"
        )
        await conn.execute(f"INSERT INTO {t.name} (device_id, time, vehicles) VALUES ('j1', $1, $2)", DAY, 2**40)
        assert await conn.fetchval(f"SELECT count(*) FROM {t.name}") == 241
        assert set(await jobs(conn, t.schema)) == {
            "policy_compression",
            "policy_retention",
            "policy_refresh_continuous_aggregate",
        }
        await conn.execute(f"CALL run_job({(await jobs(conn, t.schema))['policy_compression']})")
        assert await compressed_chunks(conn, t) > 0
    finally:
        await conn.close()


async def test_the_catalog_view_lists_each_feed_with_owner_licence_table_and_schema_version_on_timescaledb(
    timescale_url: str,
) -> None:
    conn = await asyncpg.connect(timescale_url)
    try:
        await catalog.ensure_catalog(conn)
        await catalog.ensure_catalog(conn)  # idempotent
        await conn.execute(
            """INSERT INTO hub.partners (id, name, kind, contact, mqtt_username, mqtt_password_hash, config_file)
               VALUES ('ts_partner', 'Timescale Test Partner', 'city', 'x@example.org', 'ts_partner', 'h', 'f.yaml')
               ON CONFLICT DO NOTHING"""
        )
        await conn.execute(
            """INSERT INTO hub.feeds (partner_id, name, schema_name, subject, compatibility, mqtt_filter, kafka_topic,
                   partitions, table_schema, table_name, description, licence, config)
               VALUES ('ts_partner', 'air', 'air_quality', 'hub.ts_partner.air-value', 'BACKWARD', 'p/ts/+/air',
                   'hub.ts_partner.air', 4, 'ts_partner', 'air', 'Air', 'CC0-1.0', '{}') ON CONFLICT DO NOTHING"""
        )
        for version, text in enumerate(['{"v": 1}', '{"v": 2}'], start=1):
            schema_id = await conn.fetchval(
                """INSERT INTO hub.schemas (fingerprint, schema) VALUES ($1, $2)
                   ON CONFLICT (fingerprint) DO UPDATE SET schema = EXCLUDED.schema RETURNING id""",
                f"ts-{version}",
                text,
            )
            await conn.execute(
                "INSERT INTO hub.subject_versions VALUES ('hub.ts_partner.air-value', $1, $2) ON CONFLICT DO NOTHING",
                version,
                schema_id,
            )
        await conn.execute("INSERT INTO hub.land_counters VALUES ('ts_partner', 'air', -1, 42) ON CONFLICT DO NOTHING")
        rows = [dict(r) for r in await conn.fetch(queries.CATALOG_SQL) if r["partner_id"] == "ts_partner"]
    finally:
        await conn.close()
    assert [
        {k: r[k] for k in ("owner", "feed", "licence", "table_name", "rollup_name", "schema_version", "rows_landed")}
        for r in rows
    ] == [
        {
            "owner": "Timescale Test Partner",
            "feed": "air",
            "licence": "CC0-1.0",
            "table_name": "ts_partner.air",
            "rollup_name": "ts_partner.air_rollup",
            "schema_version": 2,
            "rows_landed": 42,
        }
    ]


def queries_literal(name: str) -> str:
    """A relation name as an SQL string literal (for CALL, which takes no parameters)."""
    return "'" + name.replace("'", "''") + "'"


def documented_queries() -> list[str]:
    """Every SQL block of docs/queries.md."""
    text = (REPO / "docs" / "queries.md").read_text()
    return [block.strip().rstrip(";") for block in re.findall(r"```sql\n(.*?)```", text, re.S)]


async def test_every_query_in_the_query_guide_runs_on_timescaledb(timescale_url: str) -> None:
    t = air_quality_table("uni_air_lab")
    conn = await asyncpg.connect(timescale_url)
    try:
        await catalog.ensure_catalog(conn)
        await create(conn, t)
        day = datetime(2026, 11, 23, tzinfo=UTC)
        await land(conn, t, readings(["station-7"], day, 96, timedelta(minutes=15)))
        await land(conn, t, readings(["station-7"], datetime.now(UTC) - timedelta(hours=1), 4, timedelta(minutes=1)))
        results = {sql.splitlines()[0]: await conn.fetch(sql) for sql in documented_queries()}
    finally:
        await conn.close()
    assert len(results) == 6
    by_start = {k.split()[1]: v for k, v in results.items()}
    assert [r["device_id"] for r in by_start["DISTINCT"]] == ["station-7"]
    assert len(by_start["bucket,"]) == 96
