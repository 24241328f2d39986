"""`hub dead-letters`: refused messages kept in the database, listed, and replayed through the current config."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from hub.catalog import dead_letters as stored
from hub.catalog import store as catalog
from hub.cli.common import compact_table, console, moment, one_line_errors, settings
from hub.db import connection
from hub.errors import ConfigError
from hub.ingest.replay import replay as run_replay

app = typer.Typer(
    help="Refused messages with their reasons and payloads (kept in the database); `replay` re-runs them.",
    invoke_without_command=True,
    no_args_is_help=False,
)

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Only those received since: a duration back from now (2h, 30m, 7d) or an ISO time."),
]


def split_feed(text: str) -> tuple[str | None, str]:
    """'partner.feed' -> (partner, feed); 'feed' -> (None, feed)."""
    partner, dot, feed = text.rpartition(".")
    return (partner or None, feed) if dot else (None, text)


def shown_payload(payload: bytes, limit: int = 120) -> str:
    """The payload as text when it is UTF-8 (JSON, CSV), else its bytes in hex; clipped."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = "0x" + payload.hex()
    return text if len(text) <= limit else text[: limit - 3] + "..."


@app.callback()
@one_line_errors
def listing(
    ctx: typer.Context,
    partner: Annotated[str | None, typer.Option("--partner", "-p", help="Only this partner's.")] = None,
    feed: Annotated[str | None, typer.Option("--feed", "-f", help="Only this feed's (FEED or PARTNER.FEED).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Only this reason, e.g. missing_field.")] = None,
    since: SinceOpt = None,
    replayed: Annotated[bool, typer.Option("--replayed", help="Include those a replay sent to their feed.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array for scripts (payload as text or hex).")
    ] = False,
) -> None:
    """List dead letters, newest first: when, whose, why, and the payload as it came."""
    if ctx.invoked_subcommand is not None:
        return
    if feed is not None:
        feed_partner, feed = split_feed(feed)
        partner = partner or feed_partner

    async def fetch() -> list[stored.DeadLetter]:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            return await stored.listed(
                conn,
                partner=partner,
                feed=feed,
                reason=reason,
                since=moment(since, "--since"),
                replayed=replayed,
                limit=limit,
            )

    letters = asyncio.run(fetch())
    if as_json:
        print(json.dumps([_as_json(d) for d in letters]))
        return
    if not letters:
        console.print("no dead letters" + (" (add --replayed to see replayed ones)" if not replayed else ""))
        return
    table = compact_table("id", "received", "partner.feed", "reason", "message", "payload", "state")
    for d in letters:
        state = f"replayed {d.replayed_at:%Y-%m-%d %H:%M}" if d.replayed_at else f"dead ({d.replays} replays)"
        table.add_row(
            str(d.id), f"{d.at:%Y-%m-%d %H:%M:%S}", f"{d.partner}.{d.feed}", d.reason, d.message,
            shown_payload(d.payload), state,
        )  # fmt: skip
    console.print(table)


def _as_json(d: stored.DeadLetter) -> dict[str, object]:
    return {
        "id": d.id,
        "at": d.at.isoformat(),
        "partner": d.partner,
        "feed": d.feed,
        "reason": d.reason,
        "message": d.message,
        "stage": d.stage,
        "mqtt_topic": d.mqtt_topic,
        "payload": shown_payload(d.payload, limit=1_000_000),
        "replays": d.replays,
        "replayed_at": d.replayed_at.isoformat() if d.replayed_at else None,
    }


@app.command()
@one_line_errors
def replay(
    feed: Annotated[str, typer.Option("--feed", "-f", help="The feed to replay: PARTNER.FEED.")],
    since: SinceOpt = None,
) -> None:
    """Re-run a feed's dead letters through its current config: what decodes now lands (once), the rest stays."""
    partner, name = split_feed(feed)
    if partner is None:
        raise ConfigError(f"--feed {feed!r}: name the partner too, as PARTNER.FEED (e.g. uni_air_lab.air_quality)")
    result = asyncio.run(run_replay(settings(), partner, name, moment(since, "--since")))
    console.print(f"{result.sent} sent to {partner}.{name} (landing lands each once)", highlight=False)
    if result.skipped_headers:
        console.print(f"{result.skipped_headers} CSV header lines skipped", highlight=False)
    if result.elsewhere:
        console.print(f"{result.elsewhere} of the partner's unknown-topic dead letters belong to other feeds now: "
                      "replay those feeds", highlight=False)  # fmt: skip
    if result.refused:
        console.print(f"{len(result.refused)} still refused (kept, with the new reason):", highlight=False)
        for letter_id, reason, message in result.refused[:20]:
            console.print(f"  {letter_id}: {reason}: {message}", highlight=False)
        if len(result.refused) > 20:
            console.print(f"  ... and {len(result.refused) - 20} more (hub dead-letters --feed {feed})")
