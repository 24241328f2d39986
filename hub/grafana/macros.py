"""Grafana's PostgreSQL macros, expanded the way Grafana 11's datasource expands them before it sends a query.

Pure. `hub grafana check` (and the tests) run each panel's SQL as its organisation's role after this expansion,
so what they run is what Grafana would send. Mirrors `pkg/tsdb/grafana-postgresql-datasource/macros.go`:
`$__interval` first, then each `$__name(args)`; `$__timeGroup` becomes `time_bucket` when the datasource is in
TimescaleDB mode.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown, or missing its arguments)."""


def _rfc3339(t: datetime) -> str:
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.astimezone(UTC).microsecond:06d}".rstrip("0")
    return text + "Z"


def interval_text(interval: timedelta) -> str:
    """Grafana's way of writing an interval (`1m`, `30s`, `2h`)."""
    s = interval.total_seconds()
    for unit in ("d", "h", "m", "s"):
        if s >= _UNIT_S[unit] and s % _UNIT_S[unit] == 0:
            return f"{int(s // _UNIT_S[unit])}{unit}"
    return f"{int(s * 1000)}ms"


def _seconds(text: str) -> float:
    m = _INTERVAL.match(text.strip().strip("'"))
    if not m:
        raise MacroError(f"error parsing interval {text}")
    return int(m[1]) * _UNIT_S[m[2]]


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def expand(sql: str, start: datetime, end: datetime, interval: timedelta, *, timescaledb: bool) -> str:
    sql = sql.replace("$__interval_ms", str(int(interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", interval_text(interval))

    def group(args: list[str]) -> str:
        if len(args) < 2:
            raise MacroError("macro __timeGroup needs time column and interval")
        seconds = _seconds(args[1])
        if timescaledb:
            return f"time_bucket('{seconds:.3f}s',{args[0]})"
        return f"floor(extract(epoch from {args[0]})/{_number(seconds)})*{_number(seconds)}"

    def one(m: re.Match[str]) -> str:
        name, args = m[1], [a.strip() for a in m[2].split(",")]
        if name in ("__timeFilter", "__time", "__timeEpoch") and not args[0]:
            raise MacroError(f"missing time column argument for macro {name}")
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(end)}'"
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeGroup":
            return group(args)
        if name == "__timeGroupAlias":
            return group(args) + ' AS "time"'
        raise MacroError(f"unknown macro {name!r}")

    return MACRO.sub(one, sql)
