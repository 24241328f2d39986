"""`hub requests [create | approve | refuse]`: access requests, also made and decided on the web page."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from hub.agreement.access_request import RequestSpec
from hub.agreement.model import Delivery, Form
from hub.catalog import access_requests as stored
from hub.catalog import store as catalog
from hub.catalog.access_requests import RequestRow
from hub.cli.common import console, one_line_errors, settings
from hub.control import access_requests as control
from hub.control.apply import actor_name
from hub.db import connection
from hub.errors import ConfigError
from hub.stack.broker_auth import LocalBrokerAuth

app = typer.Typer(
    help="Access requests: list them, ask for a feed, approve (writes and applies an agreement) or refuse.",
    invoke_without_command=True,
)
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides, for the audit trail (default: login name).")]
IdArg = Annotated[int, typer.Argument(help="The request's number (`hub requests`).")]


def _show(r: RequestRow) -> None:
    fields = ", ".join(r.fields) if r.fields is not None else "every field"
    decided = f" on {r.decided_at:%Y-%m-%d %H:%M} by {r.decided_by}" if r.decided_at else ""
    why = f": {r.reason}" if r.reason else ""
    agreement = f" -> agreement {r.agreement_id} ({r.agreement_file})" if r.agreement_id else ""
    console.print(
        f"request {r.id}: {r.consumer} asks {r.provider} for {r.feed} ({r.form}; {fields}; via "
        f"{', '.join(r.delivery)}) for {r.purpose!r}: {r.status}{decided}{why}{agreement}",
        highlight=False,
        markup=False,
    )


@app.callback()
@one_line_errors
def listing(
    ctx: typer.Context,
    org: Annotated[str | None, typer.Option("--org", help="Only those this organisation made or received.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, approved or refused.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every access request (newest first), or those an organisation made or received."""
    if ctx.invoked_subcommand is not None:
        return

    async def fetch() -> list[RequestRow]:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            return await stored.listing(conn, org, status)

    rows = asyncio.run(fetch())
    if as_json:
        print(json.dumps([r.to_json() for r in rows]))
        return
    if not rows:
        console.print("no access requests", highlight=False)
        return
    table = Table("id", "from", "to", "feed", "form", "purpose", "status", "decided by", "agreement")
    for r in rows:
        table.add_row(
            str(r.id), r.consumer, r.provider, r.feed, r.form, r.purpose, r.status, r.decided_by or "-",
            r.agreement_id or "-",
        )  # fmt: skip
    console.print(table)


@app.command()
@one_line_errors
def create(
    org: Annotated[str, typer.Option("--org", help="The organisation that asks.")],
    feed: Annotated[str, typer.Option("--feed", help="provider.feed")],
    purpose: Annotated[str, typer.Option("--purpose", help="What the data is for.")],
    form: Annotated[Form, typer.Option("--form")] = Form.raw,
    fields: Annotated[
        list[str] | None, typer.Option("--field", help="A field (repeatable; default: every field).")
    ] = None,
    delivery: Annotated[list[Delivery] | None, typer.Option("--delivery", help="kafka or mqtt besides sql.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="An end: a date or a date-time with its zone.")] = None,
) -> None:
    """Ask a provider for a feed on behalf of an organisation."""
    valid_until = None
    if until is not None:
        try:
            valid_until = datetime.fromisoformat(until.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--until {until!r} is not a date or date-time (2027-01-31, 2027-01-31T12:00Z)") from None
        if valid_until.tzinfo is None:
            raise ConfigError(f"--until {until!r} has no time zone: add one, e.g. {until}Z")
    spec = RequestSpec(
        consumer=org,
        feed=feed,
        form=form,
        fields=tuple(fields) if fields else None,
        delivery=("sql", *(str(d) for d in delivery or ())),
        purpose=purpose,
        valid_until=valid_until,
    )

    async def run() -> RequestRow:
        async with connection(settings().endpoints().database_url) as conn:
            return await control.create(conn, spec, actor_name())

    _show(asyncio.run(run()))


@app.command()
@one_line_errors
def approve(
    request_id: IdArg,
    by: ByOpt = None,
    note: Annotated[str | None, typer.Option("--note", help="A note for the record.")] = None,
) -> None:
    """Approve as the hub's operator: the agreement is written under HUB_AGREEMENTS_DIR and applied."""
    s = settings()
    row = asyncio.run(
        control.approve(
            s,
            request_id,
            decider=None,
            actor=by or actor_name(),
            reason=note,
            agreements_dir=s.agreements_dir,
            broker=LocalBrokerAuth(s),
        )
    )
    _show(row)


@app.command()
@one_line_errors
def refuse(
    request_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (the organisation that asked reads it).")],
    by: ByOpt = None,
) -> None:
    """Refuse as the hub's operator, saying why."""

    async def run() -> RequestRow:
        async with connection(settings().endpoints().database_url) as conn:
            return await control.refuse(conn, request_id, decider=None, actor=by or actor_name(), reason=reason)

    _show(asyncio.run(run()))
