"""`hub stats`: what became of the messages the hub acknowledged, per partner and feed (hub/ingest/stats.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from hub.catalog import store as catalog
from hub.cli.common import compact_table, console, one_line_errors, settings, wide
from hub.db import connection
from hub.ingest.stats import FeedStats, ingest_stats
from hub.share.stats import StreamStats, share_stats


async def _stats(partner: str | None) -> tuple[list[FeedStats], list[StreamStats]]:
    async with connection(settings().endpoints().database_url) as conn:
        await catalog.ensure_catalog(conn)
        streams = [s for s in await share_stats(conn) if partner is None or s.feed.startswith(f"{partner}.")]
        return await ingest_stats(conn, partner), streams


@one_line_errors
def stats(
    partner: Annotated[str | None, typer.Option("--partner", "-p", help="Only this partner's feeds.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Reasons shown per feed in the table.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array for scripts, every reason included.")] = False,
) -> None:
    """What became of the messages the hub acknowledged, per partner and feed: accepted (landed as rows),
    duplicates, refused (with the most common reasons) and lost; acknowledged = the four together."""
    rows, streams = asyncio.run(_stats(partner))
    if as_json:
        print(json.dumps([r.as_json() for r in rows] + [{"share_stream": True, **s.as_json()} for s in streams]))
        return
    if not rows:
        console.print(f"no feeds{f' for partner {partner!r}' if partner else ''} in the catalog; run `hub apply`")
        return
    full = wide()
    # Below 120 columns: partner.feed in one column, times without seconds and zone (--json has everything).
    headers = ["partner", "feed"] if full else ["feed"]
    headers += ["accepted", "duplicates" if full else "dups", "refused", "lost"]
    headers += ["most common reasons", "last message"] if full else ["top reasons", "last (UTC)"]
    table = compact_table(*headers)
    for r in rows:
        shown = ", ".join(f"{reason} {n:,}" for reason, n in r.reasons[:top])
        more = len(r.reasons) - top
        cells = [r.partner, r.feed] if full else [f"{r.partner}.{r.feed}"]
        cells += [
            f"{r.accepted:,}",
            f"{r.duplicates:,}",
            f"[red]{r.refused:,}[/red]" if r.refused else "0",
            f"[bold red]{r.lost:,}[/bold red]" if r.lost else "0",
            shown + (f", +{more} more" if more > 0 else "") or "-",
        ]
        if r.last_at is None:
            cells.append("-")
        else:
            cells.append(r.last_at.strftime("%Y-%m-%d %H:%M:%S %Z") if full else r.last_at.strftime("%m-%d %H:%M"))
        table.add_row(*cells)
    console.print(table)
    console.print("accepted = rows landed; acknowledged = accepted + duplicates + refused + lost", style="dim")
    if streams:
        shares = compact_table("agreement", "consumer", "feed", "form", "shared", "dead letters", "lag",
                               "last shared", "last record time")  # fmt: skip
        for x in streams:
            shares.add_row(
                x.agreement,
                x.consumer,
                x.feed,
                x.form,
                f"{x.records:,}",
                f"[red]{x.dead_lettered:,}[/red]" if x.dead_lettered else "0",
                "-" if x.lag is None else f"{x.lag:,}",
                x.last_shared_at.strftime("%Y-%m-%d %H:%M:%S %Z") if x.last_shared_at else "-",
                x.last_event_time.strftime("%Y-%m-%d %H:%M:%S %Z") if x.last_event_time else "-",
            )
        console.print(shares)
        console.print("lag = records landed from the feed that the stream has not passed yet (held by its delay too)",
                      style="dim")  # fmt: skip
