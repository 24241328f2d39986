"""SQL for feed tables, generated from the feed's Avro columns.

TimescaleDB mode: a hypertable on `time` with compression, retention and a continuous
aggregate. Plain PostgreSQL mode: the same table with an index and a rollup view
(retention is then enforced by `hub maintain`, hub/control/retention.py). Identifiers are quoted by one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from hub.identifiers import qualified, quote_ident, quote_literal
from hub.schema.avro import Column

# Columns the hub adds to every feed table, after the schema's own.
HUB_COLUMNS = (
    ("received_at", "timestamptz"),  # when the MQTT message reached the ingest worker
    ("ingested_at", "timestamptz NOT NULL DEFAULT now()"),  # when the row was committed
)


@dataclass(frozen=True)
class FeedTable:
    schema: str
    table: str
    columns: tuple[Column, ...]
    retention: timedelta
    compress_after: timedelta
    chunk_interval: timedelta
    rollup: timedelta

    @property
    def name(self) -> str:
        return qualified(self.schema, self.table)

    @property
    def rollup_name(self) -> str:
        return qualified(self.schema, f"{self.table}_rollup")


def interval(td: timedelta) -> str:
    return quote_literal(f"{int(td.total_seconds())} seconds") + "::interval"


def column_sql(col: Column) -> str:
    return f"{quote_ident(col.name)} {col.sql_type}{'' if col.nullable else ' NOT NULL'}"


def create_table_sql(t: FeedTable, timescale: bool) -> list[str]:
    cols = [column_sql(c) for c in t.columns]
    cols += [f"{quote_ident(n)} {ty}" for n, ty in HUB_COLUMNS]
    stmts = [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(t.schema)}",
        f"CREATE TABLE IF NOT EXISTS {t.name} (\n    "
        + ",\n    ".join(cols)
        + ',\n    PRIMARY KEY ("device_id", "time")\n)',
    ]
    if timescale:
        stmts += [
            f"SELECT create_hypertable({quote_literal(t.name)}, by_range('time', {interval(t.chunk_interval)}),"
            " if_not_exists => true)",
            compression_settings_sql(t),
            f"SELECT add_compression_policy({quote_literal(t.name)}, {interval(t.compress_after)},"
            " if_not_exists => true)",
            f"SELECT add_retention_policy({quote_literal(t.name)}, {interval(t.retention)}, if_not_exists => true)",
        ]
    else:
        stmts.append(f'CREATE INDEX IF NOT EXISTS {quote_ident(t.table + "_time_idx")} ON {t.name} ("time" DESC)')
    stmts += rollup_sql(t, timescale)
    return stmts


def _aggregates(columns: Sequence[Column]) -> list[str]:
    """samples, avg/min/max of each numeric column, then `n_<column>`: its non-null count.

    `avg` skips nulls, so re-bucketing a nullable column's averages needs its own count as the weight
    (`samples` would bias it); shared aggregates (hub/control/share_sql.py) use them. They come last so
    that a plain-PostgreSQL rollup view made by an earlier version can be replaced in place.
    """
    numeric = [c for c in columns if c.numeric and c.name not in ("device_id", "time")]
    out = ["count(*) AS samples"]
    for c in numeric:
        q = quote_ident(c.name)
        out += [
            f"avg({q}) AS {quote_ident('avg_' + c.name)}",
            f"min({q}) AS {quote_ident('min_' + c.name)}",
            f"max({q}) AS {quote_ident('max_' + c.name)}",
        ]
    out += [f"count({quote_ident(c.name)}) AS {quote_ident('n_' + c.name)}" for c in numeric]
    return out


# time_bucket's own origin for buckets under a month (a Monday, midnight UTC); date_bin in plain
# PostgreSQL mode uses the same, written with its offset so the session's TimeZone cannot move it.
BUCKET_ORIGIN = "TIMESTAMPTZ '2000-01-03 00:00:00+00'"


def rollup_sql(t: FeedTable, timescale: bool) -> list[str]:
    """Per-device averages per bucket: a continuous aggregate, or a plain view.

    The continuous aggregate is real-time (`materialized_only = false`): buckets the refresh
    policy has not materialized yet are computed from the raw rows at query time, so the
    latest buckets are never missing from dashboards (TimescaleDB 2.13+ defaults to true).
    """
    aggs = ",\n    ".join(_aggregates(t.columns))
    if timescale:
        return [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {t.rollup_name}\n"
            "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS\n"
            f'SELECT time_bucket({interval(t.rollup)}, "time") AS bucket, device_id,\n    {aggs}\n'
            f"FROM {t.name}\nGROUP BY bucket, device_id\nWITH NO DATA",
            f"SELECT add_continuous_aggregate_policy({quote_literal(t.rollup_name)},"
            f" start_offset => {interval(t.rollup * 4 + timedelta(days=1))},"
            f" end_offset => {interval(t.rollup)}, schedule_interval => {interval(t.rollup)},"
            " if_not_exists => true)",
        ]
    return [
        f"CREATE OR REPLACE VIEW {t.rollup_name} AS\n"
        f'SELECT date_bin({interval(t.rollup)}, "time", {BUCKET_ORIGIN}) AS bucket, device_id,\n'
        f"    {aggs}\nFROM {t.name}\nGROUP BY bucket, device_id"
    ]


HUB_COLUMN_NAMES = frozenset(name for name, _ in HUB_COLUMNS)

# PostgreSQL's own spelling (format_type) of the types columns are created with.
_PG_SPELLING = {"timestamptz": "timestamp with time zone"}

# Column type changes that Avro's promotions allow (int -> long, float, double; long -> float, double;
# float -> double) and that PostgreSQL makes in place.
WIDENINGS = frozenset(
    {
        ("integer", "bigint"),
        ("integer", "real"),
        ("integer", "double precision"),
        ("bigint", "real"),
        ("bigint", "double precision"),
        ("real", "double precision"),
    }
)


def pg_type(sql_type: str) -> str:
    """A column type as PostgreSQL reports it, to compare a schema's columns with a table's."""
    return _PG_SPELLING.get(sql_type, sql_type)


def drop_rollup_sql(t: FeedTable, timescale: bool) -> str:
    return f"DROP {'MATERIALIZED VIEW' if timescale else 'VIEW'} IF EXISTS {t.rollup_name}"


def alter_table_sql(
    t: FeedTable,
    *,
    add: Sequence[Column] = (),
    retype: Sequence[Column] = (),
    drop_not_null: Sequence[str] = (),
    rebuild_rollup: bool = False,
    timescale: bool,
) -> list[str]:
    """Follow a compatible schema change: add columns (nullable: older records lack them), widen types,
    let columns the schema made optional (or dropped) be null, and rebuild the rollup when its columns change.
    """
    rebuild_rollup = rebuild_rollup or bool(retype)  # the rollup reads the column: it must go first
    stmts = [drop_rollup_sql(t, timescale)] if rebuild_rollup else []
    stmts += [f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {quote_ident(c.name)} {c.sql_type}" for c in add]
    retyped = [f"ALTER TABLE {t.name} ALTER COLUMN {quote_ident(c.name)} TYPE {c.sql_type}" for c in retype]
    stmts += _without_compression(t, retyped) if timescale and retyped else retyped
    stmts += [f"ALTER TABLE {t.name} ALTER COLUMN {quote_ident(n)} DROP NOT NULL" for n in drop_not_null]
    if rebuild_rollup:
        stmts += rollup_sql(t, timescale)
    return stmts


def compression_settings_sql(t: FeedTable) -> str:
    return (
        f"ALTER TABLE {t.name} SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',"
        " timescaledb.compress_orderby = 'time DESC')"
    )


def _without_compression(t: FeedTable, stmts: list[str]) -> list[str]:
    """TimescaleDB refuses `ALTER COLUMN .. TYPE` on a hypertable with compression enabled (checked on
    TimescaleDB 2.23): decompress every chunk, switch compression off, run `stmts`, switch it back on.
    This rewrites the whole table: it is as slow as the table is large."""
    name = quote_literal(t.name)
    return [
        f"SELECT remove_compression_policy({name}, if_exists => true)",
        f"SELECT count(decompress_chunk(c, if_compressed => true)) FROM show_chunks({name}) c",
        f"ALTER TABLE {t.name} SET (timescaledb.compress = false)",
        *stmts,
        compression_settings_sql(t),
        f"SELECT add_compression_policy({name}, {interval(t.compress_after)}, if_not_exists => true)",
    ]


def add_columns_sql(t: FeedTable, existing: Sequence[str], timescale: bool) -> list[str]:
    """Columns a compatible schema change added (and the rollup rebuilt if any of them is numeric)."""
    new = [c for c in t.columns if c.name not in existing]
    if not new:
        return []
    return alter_table_sql(t, add=new, rebuild_rollup=any(c.numeric for c in new), timescale=timescale)


def policies_sql(t: FeedTable, *, retention: bool, compression: bool, chunk_interval: bool) -> list[str]:
    """TimescaleDB: replace the policies whose setting changed (the table's data is kept)."""
    name = quote_literal(t.name)
    stmts: list[str] = []
    if retention:
        stmts += [
            f"SELECT remove_retention_policy({name}, if_exists => true)",
            f"SELECT add_retention_policy({name}, {interval(t.retention)})",
        ]
    if compression:
        stmts += [
            f"SELECT remove_compression_policy({name}, if_exists => true)",
            f"SELECT add_compression_policy({name}, {interval(t.compress_after)})",
        ]
    if chunk_interval:
        stmts.append(f"SELECT set_chunk_time_interval({name}, {interval(t.chunk_interval)})")
    return stmts
