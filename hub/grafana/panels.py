"""Panels built with grafana-foundation-sdk (types of Grafana 11.2, the compose file's image).

The SDK has no PostgreSQL query type, so a target is the SDK's own `UnknownDataquery`: the dict Grafana 11's
SQL query editor saves in code mode, emitted unchanged. Prometheus targets come from the SDK's own Prometheus
query builder (`rate_series`). Every panel names its datasource by uid, carries its
targets' SQL (hub/grafana/sql.py) and an explicit id, so the output is the same on every build.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.bargauge import Panel as BarGauge
from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
from grafana_foundation_sdk.builders.geomap import ControlsOptions, MapViewConfig
from grafana_foundation_sdk.builders.geomap import Panel as Geomap
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.builders.text import Panel as Text
from grafana_foundation_sdk.builders.timeseries import Panel as TimeSeries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode
from grafana_foundation_sdk.models.text import TextMode

from hub.grafana.model import PG_PLUGIN, PROM_PLUGIN, PanelQuery

AnyPanel = TimeSeries | Stat | Table | BarGauge | Geomap | Text


class SqlTarget(cogbuilder.Builder[cogvariants.Dataquery]):
    """A PostgreSQL target as Grafana 11 stores it (raw SQL, code mode)."""

    def __init__(self, query: PanelQuery, datasource_uid: str) -> None:
        self._data: dict[str, Any] = {
            "refId": query.ref_id,
            "datasource": {"type": PG_PLUGIN, "uid": datasource_uid},
            "editorMode": "code",
            "format": query.format,
            "rawQuery": True,
            "rawSql": query.sql,
        }

    def build(self) -> cogvariants.Dataquery:
        return UnknownDataquery(dict(self._data))


def datasource_ref(uid: str) -> DataSourceRef:
    return DataSourceRef(type_val=PG_PLUGIN, uid=uid)


def _common(panel: Any, query: PanelQuery, ds: str, width: int, height: int, description: str | None) -> Any:
    panel = panel.title(query.panel).datasource(datasource_ref(ds)).span(width).height(height)
    panel = panel.with_target(SqlTarget(query, ds))
    return panel.description(description) if description else panel


def time_series(
    query: PanelQuery, ds: str, *, unit: str = "none", width: int = 12, description: str | None = None
) -> Any:
    return _common(TimeSeries(), query, ds, width, 8, description).unit(unit).line_width(1).fill_opacity(10)


def stat(
    query: PanelQuery,
    ds: str,
    *,
    unit: str = "none",
    width: int = 6,
    description: str | None = None,
    warn_above: float | None = None,
) -> Any:
    panel = _common(Stat(), query, ds, width, 4, description).unit(unit)
    panel = panel.reduce_options(common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
    if warn_above is not None:
        steps = [Threshold(value=None, color="green"), Threshold(value=warn_above, color="orange")]
        panel = panel.thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    return panel


def table(query: PanelQuery, ds: str, *, width: int = 24, height: int = 8, description: str | None = None) -> Any:
    # align and inspect as Grafana's models default them, so a decoded file equals the generated one
    return _common(Table(), query, ds, width, height, description).align(common.FieldTextAlignment.AUTO).inspect(False)


def bar_gauge(query: PanelQuery, ds: str, *, width: int = 12, description: str | None = None) -> Any:
    panel = _common(BarGauge(), query, ds, width, 8, description)
    return panel.reduce_options(common_builders.ReduceDataOptions().values(True).calcs([]))


def geomap(query: PanelQuery, ds: str, lat: str, lon: str, *, device: str, description: str | None = None) -> Any:
    location = (
        common_builders.FrameGeometrySource().mode(common.FrameGeometrySourceMode.COORDS).latitude(lat).longitude(lon)
    )
    markers = (
        common_builders.MapLayerOptions()
        .type("markers")
        .name("devices")
        .location(location)
        .tooltip(True)
        .config({"showLegend": False, "style": {"size": {"fixed": 5}, "text": {"field": device, "mode": "field"}}})
    )
    return (
        _common(Geomap(), query, ds, 24, 12, description)
        .view(MapViewConfig().id("fit").lat(0).lon(0).zoom(1))
        .controls(ControlsOptions().show_zoom(True).mouse_wheel_zoom(True))
        .basemap(common_builders.MapLayerOptions().type("default").name("Basemap"))
        .layers([markers])
    )


def note(title: str, markdown: str, *, width: int = 24, height: int = 4) -> Any:
    return Text().title(title).span(width).height(height).mode(TextMode.MARKDOWN).content(markdown)


def prom_series(
    title: str,
    queries: list[tuple[str, str]],
    ds: str,
    *,
    unit: str = "none",
    width: int = 12,
    description: str | None = None,
) -> Any:
    """A time series of PromQL range queries: `queries` are (expression, legend) pairs, refIds A, B, ..."""
    ref = DataSourceRef(type_val=PROM_PLUGIN, uid=ds)
    panel = TimeSeries().title(title).datasource(ref).span(width).height(8).unit(unit).line_width(1).fill_opacity(10)
    for i, (expr, legend) in enumerate(queries):
        target = (
            PromQuery()
            .expr(expr)
            .legend_format(legend)
            .ref_id(chr(ord("A") + i))
            .datasource(ref)
            .editor_mode(QueryEditorMode.CODE)
            .format(PromQueryFormat.TIME_SERIES)
            .range()
        )
        panel = panel.with_target(target)
    return panel.description(description) if description else panel
