"""The SQL of every generated panel, as Grafana's PostgreSQL datasource sends it (with its macros).

Pure. A panel of an organisation's dashboard reads one shared object the policy names for it (a view in the
organisation's schema, or open_data), and only the columns the grant gives; a provider's dashboard also reads
its own feed's counters through `hub_stats` functions that answer only for feeds its role publishes; the
operators' overview reads the hub's own counters. Every identifier is quoted by hub/identifiers.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hub.agreement import names
from hub.grafana.model import PanelQuery
from hub.identifiers import qualified, quote_ident, quote_literal

STATS_SCHEMA = "hub_stats"  # SECURITY DEFINER functions over the counters, filtered by the caller's organisation
TIME = quote_ident("time")
TIME_GROUP = f"$__timeGroupAlias({TIME}, $__interval)"
# Field names the map recognises (the first of each kind present in a feed's schema and its grant).
LATITUDE = ("lat", "latitude")
LONGITUDE = ("lon", "lng", "longitude")
_POLLUTANTS = frozenset({"pm1", "pm25", "pm10", "no2", "o3", "so2", "co"})
_UNIT_SUFFIXES = (
    ("_pct", "percent"),
    ("_kwh", "kwatth"),
    ("_kw", "kwatt"),
    ("_kmh", "velocitykmh"),
    ("_db", "dB"),
    ("_hpa", "pressurehpa"),
    ("_c", "celsius"),
    ("_v", "volt"),
    ("_s", "s"),
    ("_m", "lengthm"),
)


def unit_of(name: str) -> str:
    """Grafana's unit for a field, from the way the hub's schemas name them (`temperature_c`, `power_kw`)."""
    if name in _POLLUTANTS:
        return "conugm3"
    return next((unit for suffix, unit in _UNIT_SUFFIXES if name.endswith(suffix)), "none")


Kind = Literal["number", "text", "other"]  # number: averaged and plotted; text: counted by value


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str | None = None

    @property
    def unit(self) -> str:
        return unit_of(self.name) if self.kind == "number" else "none"


@dataclass(frozen=True)
class Source:
    """The one object a dashboard reads, and what it holds."""

    schema: str
    name: str
    fields: tuple[Field, ...]  # the granted fields other than device and time, in schema order
    aggregate: bool
    pseudonymised: bool = False

    @property
    def object(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def device(self) -> str:
        return names.PSEUDONYM_COLUMN if self.pseudonymised else "device_id"

    def numbers(self) -> list[Field]:
        return [f for f in self.fields if f.kind == "number"]

    def texts(self) -> list[Field]:
        return [f for f in self.fields if f.kind == "text"]

    def coordinates(self) -> tuple[str, str] | None:
        if self.aggregate:
            return None
        numbers = {f.name for f in self.numbers()}
        lat = next((n for n in LATITUDE if n in numbers), None)
        lon = next((n for n in LONGITUDE if n in numbers), None)
        return (lat, lon) if lat and lon else None


def _q(panel: str, sql: str, fmt: str, columns: list[str], reads: str, ref: str = "A") -> PanelQuery:
    return PanelQuery(panel=panel, ref_id=ref, sql=sql, format=fmt, columns=tuple(columns), reads=reads)


def _alias(name: str) -> str:
    return quote_ident(name)


# --- raw rows ----------------------------------------------------------------------------


def raw_field_series(s: Source, f: Field, panel: str) -> PanelQuery:
    col = quote_ident(f.name)
    sql = (
        f"SELECT {TIME_GROUP}, avg({col}) AS {_alias('average')}, min({col}) AS {_alias('minimum')}, "
        f"max({col}) AS {_alias('maximum')}\nFROM {s.sql}\nWHERE $__timeFilter({TIME})\nGROUP BY 1\nORDER BY 1"
    )
    return _q(panel, sql, "time_series", ["time", "average", "minimum", "maximum"], s.object)


def raw_rows_series(s: Source, panel: str) -> PanelQuery:
    sql = (
        f"SELECT {TIME_GROUP}, count(*) AS {_alias('rows')}, count(DISTINCT {quote_ident(s.device)}) AS "
        f"{_alias('devices')}\nFROM {s.sql}\nWHERE $__timeFilter({TIME})\nGROUP BY 1\nORDER BY 1"
    )
    return _q(panel, sql, "time_series", ["time", "rows", "devices"], s.object)


def raw_freshness(s: Source, panel: str) -> PanelQuery:
    sql = f"SELECT extract(epoch FROM now() - max({TIME}))::bigint AS {_alias('seconds')}\nFROM {s.sql}"
    return _q(panel, sql, "table", ["seconds"], s.object)


def raw_devices(s: Source, panel: str) -> PanelQuery:
    sql = (
        f"SELECT count(DISTINCT {quote_ident(s.device)}) AS {_alias('devices')}\nFROM {s.sql}\n"
        f"WHERE $__timeFilter({TIME})"
    )
    return _q(panel, sql, "table", ["devices"], s.object)


def raw_latest(s: Source, panel: str) -> PanelQuery:
    device = quote_ident(s.device)
    cols = [s.device, "time", *(f.name for f in s.fields)]
    select = ", ".join(quote_ident(c) for c in cols)
    sql = (
        f"SELECT DISTINCT ON ({device}) {select}\nFROM {s.sql}\nWHERE $__timeFilter({TIME})\n"
        f"ORDER BY {device}, {TIME} DESC"
    )
    return _q(panel, sql, "table", cols, s.object)


def raw_values(s: Source, f: Field, panel: str) -> PanelQuery:
    col = quote_ident(f.name)
    sql = (
        f"SELECT {col}::text AS {col}, count(*) AS {_alias('rows')}\nFROM {s.sql}\n"
        f"WHERE $__timeFilter({TIME})\nGROUP BY 1\nORDER BY 1"
    )
    return _q(panel, sql, "table", [f.name, "rows"], s.object)


def raw_positions(s: Source, lat: str, lon: str, panel: str) -> PanelQuery:
    device = quote_ident(s.device)
    cols = [s.device, "time", lat, lon]
    sql = (
        f"SELECT DISTINCT ON ({device}) {', '.join(quote_ident(c) for c in cols)}\nFROM {s.sql}\n"
        f"WHERE $__timeFilter({TIME}) AND {quote_ident(lat)} IS NOT NULL AND {quote_ident(lon)} IS NOT NULL\n"
        f"ORDER BY {device}, {TIME} DESC"
    )
    return _q(panel, sql, "table", cols, s.object)


# --- aggregates (a view over the rollup: bucket, devices, samples, avg_/min_/max_<field>) --------------


def agg_field_series(s: Source, f: Field, panel: str) -> PanelQuery:
    avg, low, high = (quote_ident(p + f.name) for p in ("avg_", "min_", "max_"))
    sql = (
        f"SELECT bucket AS {TIME}, {avg} AS {_alias('average')}, {low} AS {_alias('minimum')}, "
        f"{high} AS {_alias('maximum')}\nFROM {s.sql}\nWHERE $__timeFilter(bucket)\nORDER BY 1"
    )
    return _q(panel, sql, "time_series", ["time", "average", "minimum", "maximum"], s.object)


def agg_coverage_series(s: Source, panel: str) -> PanelQuery:
    sql = (
        f"SELECT bucket AS {TIME}, devices AS {_alias('devices')}, samples AS {_alias('samples')}\n"
        f"FROM {s.sql}\nWHERE $__timeFilter(bucket)\nORDER BY 1"
    )
    return _q(panel, sql, "time_series", ["time", "devices", "samples"], s.object)


def agg_freshness(s: Source, panel: str) -> PanelQuery:
    sql = f"SELECT extract(epoch FROM now() - max(bucket))::bigint AS {_alias('seconds')}\nFROM {s.sql}"
    return _q(panel, sql, "table", ["seconds"], s.object)


def agg_latest(s: Source, panel: str) -> PanelQuery:
    cols = ["bucket", "devices", "samples", *(f"avg_{f.name}" for f in s.numbers())]
    sql = f"SELECT {', '.join(quote_ident(c) for c in cols)}\nFROM {s.sql}\nORDER BY bucket DESC\nLIMIT 1"
    return _q(panel, sql, "table", cols, s.object)


# --- a provider's own counters (hub_stats: rows only for feeds the caller's organisation publishes) -----


def stats_function(name: str) -> str:
    return qualified(STATS_SCHEMA, name)


def own_messages(provider: str, feed: str, panel: str) -> PanelQuery:
    fn = stats_function("feed_messages")
    sql = (
        f"SELECT reason, messages, last_at\nFROM {fn}({quote_literal(provider)}, {quote_literal(feed)})\n"
        "ORDER BY reason"
    )
    return _q(panel, sql, "table", ["reason", "messages", "last_at"], f"{STATS_SCHEMA}.feed_messages")


def own_rows_landed(provider: str, feed: str, panel: str) -> PanelQuery:
    fn = stats_function("feed_rows_landed")
    sql = f"SELECT rows AS {_alias('rows landed')}\nFROM {fn}({quote_literal(provider)}, {quote_literal(feed)})"
    return _q(panel, sql, "table", ["rows landed"], f"{STATS_SCHEMA}.feed_rows_landed")


def own_refusals(provider: str, feed: str, panel: str) -> PanelQuery:
    fn = stats_function("feed_dead_letters")
    sql = (
        f"SELECT $__timeGroupAlias(at, $__interval), reason AS metric, count(*) AS {_alias('refused')}\n"
        f"FROM {fn}({quote_literal(provider)}, {quote_literal(feed)}, $__timeFrom(), $__timeTo())\n"
        "GROUP BY 1, 2\nORDER BY 1"
    )
    return _q(panel, sql, "time_series", ["time", "metric", "refused"], f"{STATS_SCHEMA}.feed_dead_letters")


# --- the operators' overview (the hub's catalog, read by the operators' role) --------------------------------


def overview_totals(panel: str) -> PanelQuery:
    sql = (
        "SELECT coalesce(sum(messages) FILTER (WHERE reason = 'accepted'), 0) AS accepted,\n"
        "       coalesce(sum(messages) FILTER (WHERE reason <> 'accepted'), 0) AS refused,\n"
        "       (SELECT coalesce(sum(rows), 0) FROM hub.land_counters) AS landed\n"
        "FROM hub.ingest_counters"
    )
    return _q(panel, sql, "table", ["accepted", "refused", "landed"], "hub.ingest_counters")


def overview_feeds(panel: str) -> PanelQuery:
    # A feed table's size includes its chunks (TimescaleDB) or partitions: they inherit from it.
    sql = """SELECT f.partner_id AS partner, f.name AS feed,
       coalesce(i.accepted, 0) AS accepted, coalesce(i.refused, 0) AS refused,
       coalesce(l.rows, 0) AS landed, i.last_at AS last_message,
       coalesce(pg_total_relation_size(c.oid) + (SELECT coalesce(sum(pg_total_relation_size(h.inhrelid)), 0)
                FROM pg_inherits h WHERE h.inhparent = c.oid), 0) AS table_bytes
FROM hub.feeds f
LEFT JOIN (SELECT partner_id, feed, sum(messages) FILTER (WHERE reason = 'accepted') AS accepted,
                  sum(messages) FILTER (WHERE reason <> 'accepted') AS refused, max(last_at) AS last_at
           FROM hub.ingest_counters GROUP BY 1, 2) i ON i.partner_id = f.partner_id AND i.feed = f.name
LEFT JOIN (SELECT partner_id, feed, sum(rows) AS rows FROM hub.land_counters GROUP BY 1, 2) l
       ON l.partner_id = f.partner_id AND l.feed = f.name
LEFT JOIN pg_namespace n ON n.nspname = f.table_schema
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = f.table_name
ORDER BY 1, 2"""
    cols = ["partner", "feed", "accepted", "refused", "landed", "last_message", "table_bytes"]
    return _q(panel, sql, "table", cols, "hub.feeds")


def overview_dead_letter_series(panel: str) -> PanelQuery:
    sql = (
        "SELECT $__timeGroupAlias(at, $__interval), reason AS metric, count(*) AS refused\n"
        "FROM hub.dead_letters\nWHERE $__timeFilter(at)\nGROUP BY 1, 2\nORDER BY 1"
    )
    return _q(panel, sql, "time_series", ["time", "metric", "refused"], "hub.dead_letters")


def overview_dead_letters(panel: str) -> PanelQuery:
    sql = (
        "SELECT partner_id AS partner, feed, reason, stage, count(*) AS refused, max(at) AS last_at\n"
        "FROM hub.dead_letters\nWHERE $__timeFilter(at)\nGROUP BY 1, 2, 3, 4\nORDER BY refused DESC, 1, 2, 3, 4"
    )
    return _q(panel, sql, "table", ["partner", "feed", "reason", "stage", "refused", "last_at"], "hub.dead_letters")


def overview_lag(panel: str) -> PanelQuery:
    sql = (
        "SELECT topic, kafka_partition AS partition, next_offset, log_end,\n"
        "       greatest(coalesce(log_end, next_offset) - next_offset, 0) AS lag,\n"
        "       extract(epoch FROM now() - updated_at)::bigint AS seconds_since_commit\n"
        "FROM hub.land_offsets\nORDER BY lag DESC, topic, partition"
    )
    cols = ["topic", "partition", "next_offset", "log_end", "lag", "seconds_since_commit"]
    return _q(panel, sql, "table", cols, "hub.land_offsets")


def overview_lag_total(panel: str) -> PanelQuery:
    sql = (
        "SELECT coalesce(sum(greatest(coalesce(log_end, next_offset) - next_offset, 0)), 0) AS lag,\n"
        "       coalesce(extract(epoch FROM now() - max(updated_at)), 0)::bigint AS seconds_since_commit\n"
        "FROM hub.land_offsets"
    )
    return _q(panel, sql, "table", ["lag", "seconds_since_commit"], "hub.land_offsets")


def overview_land_events(panel: str) -> PanelQuery:
    sql = (
        "SELECT at AS time, kind, topic, records, detail\nFROM hub.land_events\nWHERE $__timeFilter(at)\n"
        "ORDER BY at DESC\nLIMIT 200"
    )
    return _q(panel, sql, "table", ["time", "kind", "topic", "records", "detail"], "hub.land_events")


def overview_database_size(panel: str) -> PanelQuery:
    sql = "SELECT pg_database_size(current_database()) AS bytes"
    return _q(panel, sql, "table", ["bytes"], "pg_database_size")
