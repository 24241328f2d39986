"""`hub query latest|rollup|catalog`: the questions city data teams ask most, answered from the database.

The SQL is in hub/access/queries.py and shown in docs/queries.md, to run with psql as well.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

import asyncpg
import typer

from hub.access import queries
from hub.cli.common import compact_table, console, one_line_errors, settings
from hub.connector.feed_spec import parse_duration
from hub.db import connection

app = typer.Typer(help="Ask the landed feeds: latest value per device, a day of rollups, the catalog.")

FeedArg = Annotated[str, typer.Argument(help="A feed: partner.feed (or the feed's name when it is unique).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", "-d", help="Only this device.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line, for scripts.")]


def _run(fetch: Callable[[asyncpg.Connection], Awaitable[list[asyncpg.Record]]]) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        async with connection(settings().endpoints().database_url) as conn:
            return await fetch(conn)

    return asyncio.run(go())


def _show(rows: list[asyncpg.Record], as_json: bool, title: str, keep: Callable[[str], bool] = lambda _c: True) -> None:
    """JSON lines with every column, or a table of the columns `keep` selects (all null ones left out)."""
    if as_json:
        for r in rows:
            print(json.dumps(queries.plain(r), default=_json_value))
        return
    if not rows:
        console.print(f"{title}: no rows", highlight=False)
        return
    columns = [c for c in rows[0].keys() if keep(c) and any(r[c] is not None for r in rows)]
    table = compact_table(*columns, title=title)
    for r in rows:
        table.add_row(*(_text(r[c]) for c in columns))
    console.print(table)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


@app.command()
@one_line_errors
def latest(
    feed: FeedArg,
    within: Annotated[str, typer.Option(help="Only devices heard from within this long, e.g. 1d, 6h.")] = "1d",
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The newest row of each device in a feed."""
    period = parse_duration(within)
    rows = _run(lambda conn: queries.latest(conn, feed, period, device))
    _show(rows, as_json, f"{feed}: latest value per device (heard from within {within})", lambda c: c != "ingested_at")


@app.command()
@one_line_errors
def rollup(
    feed: FeedArg,
    day: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="The day (UTC), default today.")] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A day of the feed's rollup: per device, each bucket's sample count and averages (15 minutes by default)."""
    the_day = (day or datetime.now(UTC)).date()
    rows = _run(lambda conn: queries.rollup_day(conn, feed, the_day, device))
    _show(rows, as_json, f"{feed}: rollup of {the_day.isoformat()} (UTC)", lambda c: not c.startswith(("min_", "max_")))


@app.command("catalog")
@one_line_errors
def catalog_cmd(as_json: JsonOpt = False) -> None:
    """Every feed with its owner, licence, table, rollup, schema version and rows landed."""
    rows = _run(queries.catalog_feeds)
    brief = {"partner_id", "feed", "owner", "licence", "table_name", "schema_version", "rows_landed"}
    _show(rows, as_json, "feeds (--json for every column)", lambda c: c in brief)
