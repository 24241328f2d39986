"""The overview's Prometheus panels ask only for series the hub's processes really expose: every metric name in
their PromQL is registered by the modules that define the hub's metrics (read back from prometheus-client's
registry, with the suffixes it exposes) and listed in docs/operations.md. No Prometheus runs here, so the
expressions are checked by name, not run."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

import hub.api.metrics
import hub.ingest.metrics
import hub.landing.metrics
import hub.metrics
from hub.grafana import files
from hub.grafana.model import PROM_PLUGIN
from tests.unit.grafana_world import PROMETHEUS_URL, site

DEFINING_MODULES = (hub.metrics, hub.ingest.metrics, hub.landing.metrics, hub.api.metrics)
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
STRIP = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # string literals (label values)
    re.compile(r"\{[^{}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # range selectors
    re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)"),  # grouping labels
    re.compile(r"(?<![a-zA-Z0-9_:])\d[a-zA-Z0-9_.]*"),  # numbers and durations (0.99, 5m)
]
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    for pattern in STRIP:
        expr = pattern.sub(" ", expr)
    names = set()
    for m in NAME.finditer(expr):
        called = expr[m.end() :].lstrip().startswith("(")
        if not called and m.group() not in KEYWORDS:
            names.add(m.group())
    return names


def exposed() -> set[str]:
    """Every series name the registry of a hub process serves, as Prometheus sees it."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def overview_exprs() -> list[str]:
    overview = next(d for d in site().dashboards if d.kind == "overview")
    return [
        t["expr"]
        for p in overview.model["panels"]
        for t in p.get("targets", [])
        if t.get("datasource", {}).get("type") == PROM_PLUGIN
    ]


def test_the_promql_reader_finds_the_metric_names_and_nothing_else() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(hub_x_bucket{job=~"a|b"}[$__rate_interval])))'
    assert metric_names(expr) == {"hub_x_bucket"}
    assert metric_names("sum(max by (topic, partition) (hub_a)) / ignoring(x) hub_b offset 5m") == {"hub_a", "hub_b"}


def test_every_metric_the_overview_asks_prometheus_for_is_one_the_hub_exports_and_documents() -> None:
    assert all(m.__name__ for m in DEFINING_MODULES)  # imported: their metrics are in the registry
    exprs = overview_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    assert len(exprs) >= 9 and len(used) >= 9, exprs  # rates, refusals, rows, lag, inbox, two p99s, memory
    served = exposed()
    assert "hub_land_rows_total" in served and "hub_land_rows" not in served  # a counter is served as `_total`
    assert used - served == set()
    documented = OPERATIONS.read_text()
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"`{name}`" in documented or f"`{base}`" in documented, name


def test_the_overview_covers_what_operations_asks_for() -> None:
    used = set().union(*(metric_names(e) for e in overview_exprs()))
    assert {
        "hub_ingest_messages_accepted_total",
        "hub_ingest_messages_refused_total",
        "hub_land_rows_total",
        "hub_land_lag_records",
        "hub_ingest_inbox_messages",
        "hub_kafka_send_duration_seconds_bucket",
        "hub_land_batch_duration_seconds_bucket",
        "process_resident_memory_bytes",
    } <= used


def test_the_prometheus_datasource_is_provisioned_for_the_operators_only_when_the_build_has_a_url() -> None:
    with_url = files.render(site(), "/dash", {"city": 2}).files
    ds = with_url["provisioning/datasources/hub.yaml"]
    assert "uid: hub-prometheus" in ds and f"url: {PROMETHEUS_URL}" in ds and "type: prometheus" in ds
    bare = site(prometheus_url=None)
    without = files.render(bare, "/dash", {"city": 2}).files
    assert "prometheus" not in without["provisioning/datasources/hub.yaml"]
    overview = next(d for d in bare.dashboards if d.kind == "overview")
    assert all(p.get("datasource", {}).get("type") != PROM_PLUGIN for p in overview.model["panels"])
    assert any("HUB_GRAFANA_PROMETHEUS_URL" in n for n in bare.notes)
    assert "HUB_GRAFANA_PROMETHEUS_URL" in without["operators/civic-hub/hub-overview.json"]  # the About note says so
