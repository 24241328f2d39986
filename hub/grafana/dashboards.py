"""The dashboards: one per feed for its provider, one per (organisation, grant), and the operators' overview.

Pure. A dashboard's panels read only its `Source` (the object the policy names for the organisation) with the
fields it grants: aggregate grants get aggregate panels only, pseudonymised grants show the pseudonym column
and say so. What each panel sends is kept next to the JSON (`Dashboard.queries`), so `hub grafana check` and
the tests can run it as the organisation's role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync

from hub.agreement.grants import human
from hub.agreement.policy import Access, describe
from hub.grafana import panels, sql
from hub.grafana.model import MANAGED_TAG, Dashboard, PanelQuery, uid
from hub.grafana.sql import Field, Source

OVERVIEW_UID = "hub-overview"
Section = tuple[str, list[tuple[Any, list[PanelQuery]]]]  # a row's title and its (panel builder, queries)


@dataclass(frozen=True)
class FeedMeta:
    """A feed as its dashboards describe it (from the catalog and its Avro schema)."""

    provider: str
    name: str
    description: str
    licence: str
    fields: tuple[Field, ...]  # every field other than device_id and time, in schema order

    @property
    def key(self) -> str:
        return f"{self.provider}.{self.name}"

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def source_of(feed: FeedMeta, access: Access) -> Source:
    """The object a grant (or the provider's own view) is read from, with exactly the fields it gives."""
    schema, name = access.object.split(".", 1)
    fields = tuple(feed.field(f) for f in access.clause.fields)
    return Source(schema, name, fields, access.clause.aggregate, access.clause.pseudonymise)


def _render(
    title: str, dashboard_uid: str, tags: list[str], description: str, sections: list[Section]
) -> tuple[dict[str, Any], tuple[PanelQuery, ...]]:
    builder = (
        DashboardBuilder(title)
        .uid(dashboard_uid)
        .description(description)
        .tags([MANAGED_TAG, *tags])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    queries: list[PanelQuery] = []
    next_id = 1
    for row_title, items in sections:
        if not items:
            continue
        builder = builder.with_row(Row(row_title).id(next_id))
        next_id += 1
        for panel, panel_queries in items:
            builder = builder.with_panel(panel.id(next_id))
            next_id += 1
            queries += panel_queries
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for p in model.get("panels", []):
        if p.get("type") != "row":
            # Grafana's models give every panel `fieldConfig.defaults.custom`; written here, a rebuild from the
            # SDK's models gives back exactly this file.
            p.setdefault("fieldConfig", {"defaults": {}, "overrides": []}).setdefault("defaults", {}).setdefault(
                "custom", {}
            )
    return model, tuple(queries)


def _one(panel: Any, query: PanelQuery) -> tuple[Any, list[PanelQuery]]:
    return panel, [query]


def _raw_sections(s: Source, ds: str, freshness_warn: timedelta) -> list[Section]:
    who = "pseudonymised device" if s.pseudonymised else "device"
    fresh = sql.raw_freshness(s, "Time since the last row")
    devices_now = sql.raw_devices(s, f"{who.capitalize()}s reporting")
    rows = sql.raw_rows_series(s, "Rows and devices per interval")
    overview = [
        _one(panels.stat(fresh, ds, unit="s", warn_above=freshness_warn.total_seconds()), fresh),
        _one(panels.stat(devices_now, ds), devices_now),
        _one(panels.time_series(rows, ds), rows),
    ]
    readings = []
    for f in s.numbers():
        q = sql.raw_field_series(s, f, f.name)
        readings.append(_one(panels.time_series(q, ds, unit=f.unit, description=f.doc), q))
    values = []
    for f in s.texts():
        q = sql.raw_values(s, f, f"Rows by {f.name}")
        values.append(_one(panels.bar_gauge(q, ds, description=f.doc), q))
    devices: list[tuple[Any, list[PanelQuery]]] = []
    coords = s.coordinates()
    if coords:
        q = sql.raw_positions(s, coords[0], coords[1], f"Where each {who} was last")
        devices.append(_one(panels.geomap(q, ds, coords[0], coords[1], device=s.device), q))
    latest = sql.raw_latest(s, f"Latest row per {who}")
    devices.append(_one(panels.table(latest, ds), latest))
    return [("Overview", overview), ("Readings", readings), ("Values", values), ("Devices", devices)]


def _aggregate_sections(s: Source, ds: str, freshness_warn: timedelta) -> list[Section]:
    fresh = sql.agg_freshness(s, "Time since the latest bucket began")
    coverage = sql.agg_coverage_series(s, "Devices and samples per bucket")
    latest = sql.agg_latest(s, "Latest bucket")
    series = []
    for f in s.numbers():
        q = sql.agg_field_series(s, f, f"{f.name} (per bucket)")
        series.append(_one(panels.time_series(q, ds, unit=f.unit, description=f.doc), q))
    return [
        (
            "Overview",
            [
                _one(panels.stat(fresh, ds, unit="s", warn_above=freshness_warn.total_seconds()), fresh),
                _one(panels.time_series(coverage, ds, width=18), coverage),
            ],
        ),
        ("Aggregates", series),
        ("Latest bucket", [_one(panels.table(latest, ds, height=5), latest)]),
    ]


def reading_queries(s: Source) -> list[PanelQuery]:
    """The queries of the panels a source's dashboard gets for its data (raw or aggregate), in order."""
    sections = _aggregate_sections(s, "-", timedelta(0)) if s.aggregate else _raw_sections(s, "-", timedelta(0))
    return [q for _, items in sections for _, qs in items for q in qs]


def _counter_section(feed: FeedMeta, ds: str) -> Section:
    landed = sql.own_rows_landed(feed.provider, feed.name, "Rows landed (all time)")
    messages = sql.own_messages(feed.provider, feed.name, "Messages by outcome (all time)")
    refusals = sql.own_refusals(feed.provider, feed.name, "Refused messages per interval, by reason")
    why = "From the hub's counters; only the feed's provider can read them (hub_stats)."
    return (
        "Messages",
        [
            _one(panels.stat(landed, ds, description=why), landed),
            _one(panels.table(messages, ds, width=18, height=4, description=why), messages),
            _one(panels.time_series(refusals, ds, width=24, description=why), refusals),
        ],
    )


def feed_dashboard(feed: FeedMeta, access: Access, *, ds: str, folder: str) -> Dashboard:
    """The provider's own view of a feed: every field, every device, and its messages and refusals."""
    s = source_of(feed, access)
    intro = panels.note(
        "About this feed",
        f"**{feed.key}**: {feed.description}\n\nLicence {feed.licence}. Read from `{s.object}` "
        "(the provider's own view of its feed).",
        height=3,
    )
    sections: list[Section] = [("About", [(intro, [])])]
    sections += _raw_sections(s, ds, timedelta(minutes=15))
    sections.append(_counter_section(feed, ds))
    dashboard_uid = uid("feed", feed.provider, feed.name)
    title = f"{feed.name} ({feed.provider})"
    model, queries = _render(title, dashboard_uid, ["feed", feed.provider, feed.name], feed.description, sections)
    return Dashboard(dashboard_uid, title, feed.provider, folder, "feed", model, queries, feed.key, "raw", None)


def grant_dashboard(org: str, feed: FeedMeta, access: Access, *, ds: str, folder: str) -> Dashboard:
    """What one clause of one agreement lets `org` read, and nothing more."""
    s = source_of(feed, access)
    c, a = access.clause, access.agreement
    assert a is not None, "the provider's own view is feed_dashboard"
    lines = [
        f"**{feed.key}**: {feed.description}",
        f"Agreement `{a.id}` ({'open data' if a.consumers is None else 'to ' + org}) gives {describe(c)}.",
        f"Purpose: {a.purpose}. Licence {a.licence}.",
    ]
    if a.valid_from or a.valid_until:
        since = f"from {a.valid_from:%Y-%m-%d}" if a.valid_from else ""
        until = f"until {a.valid_until:%Y-%m-%d %H:%M} UTC" if a.valid_until else ""
        lines.append(f"Valid {' '.join(p for p in (since, until) if p)}; the view is empty outside that window.")
    if c.pseudonymise:
        lines.append(
            f"Device ids are **pseudonyms** (`{s.device}`): a keyed hash, stable within this agreement, that cannot "
            "be traced back to the provider's ids."
        )
    if c.delay:
        lines.append(f"Rows appear {human(c.delay)} after they were measured.")
    lines.append(f"Read from `{s.object}` with this organisation's own database role.")
    sections: list[Section] = [
        ("About", [(panels.note("What this agreement gives", "\n\n".join(lines), height=5), [])])
    ]
    if c.aggregate:
        bucket = c.bucket or timedelta(minutes=15)
        sections += _aggregate_sections(s, ds, 2 * bucket + c.delay)
    else:
        sections += _raw_sections(s, ds, timedelta(minutes=15) + c.delay)
    form = "aggregate" if c.aggregate else "raw"
    dashboard_uid = uid("grant", org, feed.provider, feed.name, form)
    title = f"{feed.name} from {feed.provider}" + (" (aggregates)" if c.aggregate else "")
    tags = ["grant", feed.provider, feed.name, form, a.id]
    model, queries = _render(title, dashboard_uid, tags, f"{a.id}: {describe(c)}", sections)
    return Dashboard(dashboard_uid, title, org, folder, "grant", model, queries, feed.key, form, a.id)


RATE = "[$__rate_interval]"  # Grafana's own window for rate(): at least four scrape intervals


def _p99(histogram: str) -> str:
    return f"histogram_quantile(0.99, sum by (le) (rate({histogram}_bucket{RATE})))"


def _prometheus_section(prom: str) -> Section:
    """Rates over time from the workers' and the API's own metrics (hub/metrics.py; docs/operations.md, "Metrics").

    No SQL: `hub grafana check` has nothing to run for them, and the PromQL names only metrics the hub exports
    (tests/unit/test_grafana_prometheus.py)."""
    why = "From Prometheus (the `prometheus` service of docker-compose.yml), which scrapes every hub process."
    lag = "max by (topic, partition) (hub_land_lag_records)"  # while partitions move, two workers may report one
    panels_ = [
        panels.prom_series(
            "Messages accepted per second, by partner and feed",
            [(f"sum by (partner, feed) (rate(hub_ingest_messages_accepted_total{RATE}))", "{{partner}}.{{feed}}")],
            prom, unit="mps", description=why,
        ),
        panels.prom_series(
            "Messages refused per second, by reason",
            [(f"sum by (reason) (rate(hub_ingest_messages_refused_total{RATE}))", "{{reason}}")],
            prom, unit="mps", description=why,
        ),
        panels.prom_series(
            "Rows landed per second, by feed",
            [(f"sum by (partner, feed) (rate(hub_land_rows_total{RATE}))", "{{partner}}.{{feed}}")],
            prom, unit="rowsps", description=why,
        ),
        panels.prom_series(
            "Landing lag (records), per partition and in all",
            [(lag, "{{topic}}/{{partition}}"), (f"sum({lag})", "all partitions")],
            prom, description="Log end minus the landed offset, as each landing worker saw it after its last batch.",
        ),
        panels.prom_series(
            "Ingest inbox depth and messages awaiting their acknowledgement",
            [
                ("sum by (instance) (hub_ingest_inbox_messages)", "inbox {{instance}}"),
                ("sum by (instance) (hub_ingest_unacknowledged_messages)", "unacknowledged {{instance}}"),
            ],
            prom, description=why,
        ),
        panels.prom_series(
            "Kafka send and landing batch latency (p99)",
            [
                (_p99("hub_kafka_send_duration_seconds"), "Kafka send p99"),
                (_p99("hub_land_batch_duration_seconds"), "landing batch p99"),
            ],
            prom, unit="s", description="99th percentile over all workers, from the histograms' buckets.",
        ),
        panels.prom_series(
            "Resident memory of each hub process",
            [('process_resident_memory_bytes{job=~"hub-workers|hub-api"}', "{{job}} {{instance}}")],
            prom, unit="bytes", width=24, description=why,
        ),
    ]  # fmt: skip
    return ("Rates (Prometheus)", [(p, []) for p in panels_])


def overview_dashboard(*, ds: str, folder: str, prometheus: str | None = None) -> Dashboard:
    """The operators' view of the hub: what its database holds and, with a Prometheus datasource (its uid in
    `prometheus`), rates over time from the processes' metrics."""
    totals = sql.overview_totals("Messages accepted, refused, rows landed (all time)")
    lag_total = sql.overview_lag_total("Landing lag (records) and time since the last commit")
    size = sql.overview_database_size("Database size")
    feeds = sql.overview_feeds("Feeds: messages, rows landed, table size")
    dead_series = sql.overview_dead_letter_series("Dead letters per interval, by reason")
    dead_table = sql.overview_dead_letters("Dead letters by partner, feed and reason")
    lag = sql.overview_lag("Landing position per topic partition")
    events = sql.overview_land_events("Landing events (broker resets, gaps, topics recreated)")
    counters = (
        "Counters the hub keeps in its database (`hub.ingest_counters`, `hub.land_counters`, `hub.land_offsets`, "
        "`hub.dead_letters`, `hub.land_events`) and table sizes: totals since the hub started counting. "
    )
    if prometheus is None:
        rates = (
            "Message and landing **rates over time** come from the workers' Prometheus metrics, and this build was "
            "given no Prometheus (`HUB_GRAFANA_PROMETHEUS_URL`), so they are left out. Dead letters carry their "
            "time, so their rate is shown."
        )
    else:
        rates = (
            "**Rates over time** (messages, refusals, rows landed, lag, inbox, latency, memory) come from the "
            "Prometheus that scrapes every hub process (datasource `" + prometheus + "`), for as long as it keeps "
            "them (15 days by default in compose). Dead letters carry their time, so their rate is shown too."
        )
    about = panels.note("What this dashboard shows", counters + rates, height=4)
    sections: list[Section] = [
        ("About", [(about, [])]),
        (
            "Totals",
            [
                _one(panels.stat(totals, ds, width=10), totals),
                _one(panels.stat(lag_total, ds, width=8, warn_above=10_000), lag_total),
                _one(panels.stat(size, ds, unit="bytes", width=6), size),
            ],
        ),
        ("Feeds", [_one(panels.table(feeds, ds), feeds)]),
    ]
    if prometheus is not None:
        sections.append(_prometheus_section(prometheus))
    sections += [
        (
            "Dead letters",
            [
                _one(panels.time_series(dead_series, ds), dead_series),
                _one(panels.table(dead_table, ds, width=12), dead_table),
            ],
        ),
        ("Landing", [_one(panels.table(lag, ds, width=12), lag), _one(panels.table(events, ds, width=12), events)]),
    ]
    model, queries = _render("Hub overview", OVERVIEW_UID, ["overview"], "The hub's health, for operators", sections)
    return Dashboard(OVERVIEW_UID, "Hub overview", None, folder, "overview", model, queries)
